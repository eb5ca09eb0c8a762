"""Ctrl-C / SIGTERM: finish the step, write last.pth, exit with a resume hint; resuming ends where an
uninterrupted run ends (acceptance 3)."""
from __future__ import annotations

import os
import random
import signal
import time

import pytest

from tests.robustness._helpers import STEPS_PER_EPOCH, assert_same_run, exp_dir, load, log_count, start_run, wait_for
from tools.checkpoint import load_checkpoint
from tools.engine import hooks as engine_hooks
from tools.engine import trainer as engine_trainer

# Small batches: 42 steps an epoch, so a signal sent just after the loop starts lands mid-epoch.
SMALL_BATCH = {"TRAIN.BATCH_SIZE": 2, "TRAIN.MAX_EPOCH": 2}
LOOP_STARTED = "Ctrl-C (or SIGTERM) stops after the current step"  # logged once the handler is installed


def test_sigint_saves_last_and_prints_resume_hint(tiny, tmp_path):
    from tools.engine import run_training as train

    cfg_file = tiny(NAME="sigint", REDIRECTOR=True, **SMALL_BATCH)
    exp = exp_dir(cfg_file)
    proc = start_run(["--config-file", str(cfg_file)], tmp_path / "out.txt")
    try:
        wait_for(lambda: log_count(exp, LOOP_STARTED) >= 1, proc, 240, "training to start")
        time.sleep(random.uniform(0.05, 0.3))
        proc.popen.send_signal(signal.SIGINT)
        rc = proc.popen.wait(timeout=60)  # a hang guard only: how fast depends on the machine's load
    finally:
        if proc.popen.poll() is None:
            proc.popen.kill()
    out = proc.text()
    assert rc == 130, out[-3000:]
    assert "SIGINT received: finishing the current step, then saving last.pth" in out
    hint = f"Resume with: uv run run.py --config-file {exp / 'config.yaml'} TRAIN.RESUME auto"
    assert hint in out and "Traceback" not in out
    ck = load_checkpoint(exp / "last.pth")  # loads with weights_only=True
    steps = int(120 * 0.7) // 2
    assert ck["epoch"] == 0 and 1 <= ck["step"] < steps, (ck["epoch"], ck["step"])  # mid-epoch: after that step
    assert f"interrupted: stopped at epoch 0, step {ck['step']}; {exp / 'last.pth'} saved." in out
    assert ck["partial"]["steps"] == ck["step"] and ck["history"] == []
    assert not (exp / "summary.json").exists()

    # the hint works as printed (config.yaml is the run's full config); run in-process to save a start-up,
    # then compared with an uninterrupted run of the same config
    train(load(exp / "config.yaml", "TRAIN.RESUME", "auto", "REDIRECTOR", "False"))
    ref_file = tiny(NAME="sigint_ref", **SMALL_BATCH)
    train(load(ref_file))
    assert_same_run(exp, exp_dir(ref_file))


def test_sigterm_mid_epoch_at_epoch_end_and_during_validation_resume_identically(tiny, reference, monkeypatch):
    """Three interruptions of one run, deterministic (the signal is sent from inside the loop):
    SIGTERM after the last step of epoch 0, SIGINT while epoch 0 is validated, SIGTERM at epoch 1 step 2."""
    from tools.engine import run_training as train

    cfg_file = tiny(NAME="sigterm")
    exp = exp_dir(cfg_file)
    real_epoch, real_eval = engine_trainer.train_one_epoch, engine_hooks.evaluate_split
    plan = [("step", 0, STEPS_PER_EPOCH, signal.SIGTERM), ("eval", 0, None, signal.SIGINT),
            ("step", 1, 2, signal.SIGTERM)]
    fired: list[bool] = []

    def one_epoch(*args, **kw):
        kind, epoch, step, sig = plan[0] if plan else (None, None, None, None)
        if kind == "step" and kw["epoch"] == epoch:
            kw["on_step"] = lambda s: s == step and os.kill(os.getpid(), sig)
        return real_epoch(*args, **kw)

    def evaluate(*args, **kw):
        if plan and plan[0][0] == "eval" and not fired:  # once: a second signal means "stop now"
            fired.append(True)
            os.kill(os.getpid(), plan[0][3])
        return real_eval(*args, **kw)

    monkeypatch.setattr(engine_trainer, "train_one_epoch", one_epoch)
    monkeypatch.setattr(engine_hooks, "evaluate_split", evaluate)
    expected = [(0, STEPS_PER_EPOCH), (1, 0), (1, 2)]  # (epoch, step) stored in last.pth
    before = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN in a background job
    for k, (epoch, step) in enumerate(expected):
        with pytest.raises(KeyboardInterrupt, match=f"stopped at epoch {epoch}, step {step};.*TRAIN.RESUME auto"):
            train(load(cfg_file, *(["TRAIN.RESUME", "auto"] if k else [])))
        ck = load_checkpoint(exp / "last.pth")
        assert (ck["epoch"], ck["step"]) == (epoch, step)
        assert len(ck["history"]) == epoch  # completed epochs only
        assert signal.getsignal(signal.SIGINT) is before  # handlers restored
        plan.pop(0)
    train(load(cfg_file, "TRAIN.RESUME", "auto"))
    assert_same_run(exp, reference)
