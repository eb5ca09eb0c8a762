"""kill -9 at random points, resume each time: the run ends exactly where an uninterrupted one ends,
and no checkpoint is ever half-written (acceptance 2)."""
from __future__ import annotations

import os
import random
import time

from tests.robustness._helpers import (
    assert_same_run,
    epochs_done,
    exp_dir,
    kill,
    load,
    log_count,
    metrics_rows,
    start_run,
    wait_for,
)
from tools.checkpoint import load_checkpoint

KILLS = 3
SMALLER_BATCH = {"TRAIN.BATCH_SIZE": 4}  # 21 steps an epoch: most of a run's time is spent inside epochs
LOOP_STARTED = "Ctrl-C (or SIGTERM) stops after the current step"


def _all_checkpoints_load(exp) -> list[tuple[int, int]]:
    """Every *.pth in the folder loads (weights_only); returns (epoch, step) of last.pth if present."""
    seen = []
    for f in sorted(exp.glob("*.pth")):
        ck = load_checkpoint(f)
        assert "model" in ck and "epoch" in ck, f
        if f.name == "last.pth":
            seen.append((ck["epoch"], ck["step"]))
    return seen


def test_sigkill_at_random_points_then_resume_matches_uninterrupted_run(tiny, tmp_path):
    from tools.engine import run_training as train

    seed = int(os.environ.get("ROBUSTNESS_KILL_SEED", time.time_ns() % 10_000))
    rng = random.Random(seed)
    ref_file = tiny(NAME="uninterrupted", **SMALLER_BATCH)
    train(load(ref_file))
    reference = exp_dir(ref_file)
    epoch_s = max(float(r["train_seconds"]) for r in metrics_rows(reference, timing=True))
    cfg_file = tiny(NAME="killed", REDIRECTOR=True, **SMALLER_BATCH)
    exp = exp_dir(cfg_file)
    args = ["--config-file", str(cfg_file), "TRAIN.RESUME", "auto"]
    kills = []
    for k in range(KILLS):
        done = epochs_done(exp)
        starts = log_count(exp, LOOP_STARTED)
        proc = start_run(args, tmp_path / f"run{k}.txt")
        try:
            wait_for(lambda: log_count(exp, LOOP_STARTED) > starts, proc, 240, "training to start")
            t_start, epoch_wall = time.monotonic(), epoch_s
            if k == 1:  # let this one finish an epoch first, so some resume starts past epoch 0
                wait_for(lambda: epochs_done(exp) > done or proc.popen.poll() is not None, None, 240,
                         "one more epoch")
                epoch_wall = time.monotonic() - t_start  # an epoch (train + eval) at today's machine load
            time.sleep(rng.uniform(0.0, 0.8 * epoch_wall))
            kill(proc)
            rc = proc.popen.wait(timeout=60)
        finally:
            kill(proc)
        if rc == 0:  # finished before the kill landed (possible in the last round): nothing to resume
            break
        assert rc == -9, proc.text()[-3000:]
        kills.append(_all_checkpoints_load(exp))
    print(f"kill seed {seed}: last.pth (epoch, step) after each kill: {kills}")
    assert len(kills) >= 2 and any(k and k[0][0] >= 1 for k in kills), kills

    # the last resume runs in this process (one interpreter start-up less): same code path as run.py
    train(load(cfg_file, "TRAIN.RESUME", "auto", "REDIRECTOR", "False"))
    assert_same_run(exp, reference)
    _all_checkpoints_load(exp)
    assert not list(exp.glob(".last.pth.*.tmp")), "stale temp files of killed writers are cleaned up"
