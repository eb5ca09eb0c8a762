"""Resources: a CUDA out-of-memory names the batch-size key and AMP; a finished (or stopped) run is not
overwritten unless asked."""
from __future__ import annotations

import shutil
import sys

import pytest
import torch

from tests.robustness._helpers import exp_dir, sha, the_error_line
from tools.engine import hooks as engine_hooks
from tools.engine import trainer as engine_trainer


def _cli(monkeypatch, capsys, *args) -> tuple[int, str]:
    import run

    monkeypatch.setattr(sys, "argv", ["run.py", *args])
    rc = run.cli()
    return rc, capsys.readouterr().err


def _oom(*args, **kwargs):
    raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 7.8 GiB total)")


@pytest.mark.parametrize("module, where, key, value", [(engine_trainer, "train_one_epoch", "TRAIN.BATCH_SIZE", 16),
                                                       (engine_hooks, "evaluate_split", "TEST.BATCH_SIZE", 64)])
def test_cuda_oom_suggests_a_smaller_batch_or_amp(tiny, monkeypatch, capsys, module, where, key, value):
    monkeypatch.setattr(module, where, _oom)
    rc, err = _cli(monkeypatch, capsys, "--config-file", str(tiny(NAME=f"oom_{where}", **{"TRAIN.MAX_EPOCH": 1})))
    assert rc == 2
    assert the_error_line(err) == (f"error: CUDA ran out of memory at {key} {value}; lower {key}, or use TRAIN.AMP "
                                   "bf16/fp16 (or FINETUNE.MODE partial/head to train fewer weights)")


def test_finished_run_is_not_overwritten_unless_asked(tiny, reference, monkeypatch, capsys):
    cfg_file = tiny(NAME="done")
    exp = exp_dir(cfg_file)
    shutil.copytree(reference, exp)  # a finished run of the same config
    (exp / "tensorboard").mkdir()
    (exp / "tensorboard" / "events.out.old").write_bytes(b"old run")
    before = {f.name: sha(f) for f in exp.iterdir() if f.is_file()}

    rc, err = _cli(monkeypatch, capsys, "--config-file", str(cfg_file))
    assert rc == 2
    assert the_error_line(err) == (f"error: {exp} already holds a finished run; set TRAIN.RESUME auto to continue "
                                   "it, choose another NAME, or pass --overwrite to replace it")
    assert {f.name: sha(f) for f in exp.iterdir() if f.is_file()} == before  # nothing touched, not even log.txt

    rc, err = _cli(monkeypatch, capsys, "--config-file", str(cfg_file), "--overwrite", "TRAIN.MAX_EPOCH", "1")
    assert rc == 0, err
    assert not (exp / "tensorboard" / "events.out.old").exists()  # the old run's curves do not mix in
    assert len((exp / "metrics.csv").read_text().splitlines()) == 2  # one epoch: the new run only
    assert sha(exp / "summary.json") != before["summary.json"]
    assert "experiment " in (exp / "log.txt").read_text() and "epoch 2 " not in (exp / "log.txt").read_text()


def test_stopped_run_is_not_restarted_from_scratch_by_accident(tiny, reference, monkeypatch, capsys):
    cfg_file = tiny(NAME="stopped")
    exp = exp_dir(cfg_file)
    exp.mkdir(parents=True)
    shutil.copy(reference / "last.pth", exp / "last.pth")  # what a Ctrl-C leaves: last.pth, no summary.json
    before = sha(exp / "last.pth")
    rc, err = _cli(monkeypatch, capsys, "--config-file", str(cfg_file))
    assert rc == 2
    assert "already holds a stopped run (last.pth) that can be resumed; set TRAIN.RESUME auto" in the_error_line(err)
    assert sha(exp / "last.pth") == before
