"""A NaN/inf loss stops the run naming epoch and step (last good checkpoint kept), or skips the step
and counts it (TRAIN.ON_NONFINITE skip)."""
from __future__ import annotations

import csv
import sys

import pytest
import torch

from tools.engine.loop import NonFiniteLoss
from tests.robustness._helpers import STEPS_PER_EPOCH, exp_dir, load, sha, the_error_line
from tools.checkpoint import load_checkpoint
from tools.engine import trainer as engine_trainer


@pytest.fixture
def poison(monkeypatch):
    """``poison(steps, exp)``: the model's output is NaN at the given global training steps
    (epoch * STEPS_PER_EPOCH + step). Records the sha of last.pth at the moment of the first NaN."""
    state = {"calls": 0, "last_sha": None}

    def install(steps: set[int], exp) -> dict:
        real = engine_trainer.build_model

        def build(cfg, num_attrs, *rest):
            model = real(cfg, num_attrs, *rest)

            def hook(module, args, out):
                if not module.training:
                    return None
                k, state["calls"] = state["calls"], state["calls"] + 1
                if k in steps:
                    if state["last_sha"] is None and (exp / "last.pth").is_file():
                        state["last_sha"] = sha(exp / "last.pth")
                    return out * float("nan")
                return None

            model.register_forward_hook(hook)
            return model

        monkeypatch.setattr(engine_trainer, "build_model", build)
        return state

    return install


def _finite(state_dict) -> bool:
    return all(torch.isfinite(v).all() for v in state_dict.values() if v.is_floating_point())


def test_stop_names_epoch_and_step_and_keeps_the_last_good_checkpoint(tiny, poison, monkeypatch, capsys):
    import run

    cfg_file = tiny(NAME="nan_stop", **{"TRAIN.MAX_EPOCH": 2})
    exp = exp_dir(cfg_file)
    state = poison({STEPS_PER_EPOCH + 2}, exp)  # epoch 1, step 2
    monkeypatch.setattr(sys, "argv", ["run.py", "--config-file", str(cfg_file)])
    assert run.cli() == 2
    line = the_error_line(capsys.readouterr().err)
    assert line == (f"error: non-finite loss (nan) at epoch 1, step 2; the last good checkpoint is kept (lower the "
                      f"LR or set TRAIN.ON_NONFINITE skip) [last good checkpoint: {exp / 'last.pth'} (1 epoch(s) done)]")
    assert state["last_sha"] == sha(exp / "last.pth")  # untouched since the NaN
    ck = load_checkpoint(exp / "last.pth")
    assert ck["epoch"] == 1 and _finite(ck["model"]) and not (exp / "summary.json").exists()


def test_stop_in_the_first_epoch_says_no_checkpoint_exists(tiny, poison):
    from tools.engine import run_training as train

    cfg_file = tiny(NAME="nan_first", **{"TRAIN.MAX_EPOCH": 1})
    poison({1}, exp_dir(cfg_file))
    with pytest.raises(NonFiniteLoss, match=r"at epoch 0, step 1; .*\[no checkpoint was written before it\]"):
        train(load(cfg_file))


def test_skip_counts_skipped_steps_in_metrics_csv(tiny, poison, caplog):
    from tools.engine import run_training as train

    cfg_file = tiny(NAME="nan_skip", **{"TRAIN.MAX_EPOCH": 2, "TRAIN.ON_NONFINITE": "skip"})
    exp = exp_dir(cfg_file)
    poison({STEPS_PER_EPOCH + 1, STEPS_PER_EPOCH + 3}, exp)
    summary = train(load(cfg_file))
    with open(exp / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["skipped_steps"] for r in rows] == ["0", "2"]
    assert all(r["train_loss"] != "nan" and r["train_bce"] != "nan" for r in rows)
    assert "non-finite loss (nan) at epoch 1, step 1: step skipped" in caplog.text
    assert "non-finite loss (nan) at epoch 1, step 3: step skipped" in caplog.text
    assert _finite(load_checkpoint(exp / "last.pth")["model"]) and summary["epochs"] == 2


def test_skip_refuses_an_epoch_where_every_step_was_non_finite(tiny, poison):
    from tools.engine import run_training as train

    cfg_file = tiny(NAME="nan_all", **{"TRAIN.MAX_EPOCH": 2, "TRAIN.ON_NONFINITE": "skip"})
    poison(set(range(STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH)), exp_dir(cfg_file))
    with pytest.raises(NonFiniteLoss, match=rf"every step of epoch 1 had a non-finite loss \({STEPS_PER_EPOCH} skipped\)"):
        train(load(cfg_file))
