"""Checkpoints: everything needed to resume is in last.pth, writes are atomic, damaged files are refused."""
from __future__ import annotations

import pytest
import torch

from tests.robustness._helpers import exp_dir, load, sha
from tools.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

RESUME_KEYS = {"model", "attr_names", "groups", "cfg", "optimizer", "scheduler", "scaler", "ema", "criterion", "rng",
               "epoch", "step", "partial", "best_metric", "best_epoch", "history"}


def test_last_pth_holds_the_whole_training_state(reference):
    ck = load_checkpoint(reference / "last.pth")
    assert RESUME_KEYS <= set(ck)
    assert (ck["epoch"], ck["step"], ck["partial"]) == (3, 0, None)
    assert len(ck["history"]) == 3 and ck["best_epoch"] == max(range(3), key=lambda e: ck["history"][e]["val_ma"])
    assert ck["optimizer"]["state"] and ck["scheduler"]["num_bad_epochs"] is not None  # AdamW moments, plateau
    assert set(ck["ema"]) == set(ck["model"])
    # the loss-stack state: stored recalls of the logit update differ from their initial ones
    assert not torch.equal(ck["criterion"]["logit_update.pos_recall"], torch.ones(10))
    assert ck["rng"]["torch"].dtype == torch.uint8
    from tools.inference import cfg_from_checkpoint

    assert cfg_from_checkpoint(load_checkpoint(reference / "best_model.pth")).MODEL.BACKBONE == "test_resnet"


def test_a_crash_while_saving_leaves_the_previous_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "last.pth"
    save_checkpoint({"model": {"w": torch.ones(3)}, "epoch": 1}, path)
    before = sha(path)

    def dying_save(obj, f, *a, **kw):
        f.write(b"PK\x03\x04 half a zip")
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint({"model": {"w": torch.zeros(3)}, "epoch": 2}, path)
    assert sha(path) == before and load_checkpoint(path)["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pth"]  # no temp file left behind


def test_temp_files_of_a_killed_writer_are_removed_by_the_next_save(tmp_path):
    stale = tmp_path / ".last.pth.k3j2h1.tmp"
    stale.write_bytes(b"PK\x03\x04 torn")
    other = tmp_path / ".best_model.pth.x.tmp"
    other.write_bytes(b"x")
    save_checkpoint({"epoch": 0}, tmp_path / "last.pth")
    assert not stale.exists() and other.exists()  # only this file's temps: best_model.pth's writer is not ours


@pytest.mark.parametrize("damage", ["truncated", "empty", "text", "missing"])
def test_damaged_or_missing_checkpoint_is_refused_with_its_path(reference, tmp_path, damage):
    path = tmp_path / "model.pth"
    data = (reference / "best_model.pth").read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "text":
        path.write_text("<html>404 Not Found</html>")
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    msg = str(e.value)
    assert str(path) in msg
    assert ("checkpoint not found" if damage == "missing" else "is not a readable checkpoint") in msg


def test_resume_from_missing_file_names_the_key(tiny):
    from tools.engine import run_training as train

    with pytest.raises(CheckpointError, match=r"TRAIN.RESUME = '/nope/last.pth': file not found"):
        train(load(tiny(NAME="nofile"), "TRAIN.RESUME", "/nope/last.pth"))


def test_resume_with_another_model_config_is_refused_not_a_traceback(tiny, reference):
    from tools.engine import run_training as train

    cfg_file = tiny(NAME="mismatch")
    with pytest.raises(CheckpointError) as e:
        train(load(cfg_file, "TRAIN.RESUME", str(reference / "last.pth"), "MODEL.HEAD_BN", "True"))
    msg = str(e.value)
    assert "does not fit this run" in msg and str(reference / "config.yaml") in msg
    assert not (exp_dir(cfg_file) / "last.pth").exists()
