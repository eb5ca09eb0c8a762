"""End to end on generated data: the loop learns, writes every result file, and is reproducible."""
import json

import pytest

from tests.conftest import REPO, tiny_opts

RESULT_FILES = ["config.yaml", "log.txt", "metrics.csv", "attributes_best.csv", "attributes_best.png",
                "curves.png", "best_model.pth", "last.pth", "summary.json", "best_metrics.json"]


def test_demo_learns_beyond_chance(tmp_path):
    """A shorter version of configs/demo.yaml: the model must learn, not just run."""
    from configs import load_config
    from tools.engine import run_training as train

    cfg = load_config(REPO / "configs/demo.yaml", tiny_opts(
        tmp_path, **{"DATASET.SYNTH_SIZE": 320, "DATASET.HEIGHT": 96, "DATASET.WIDTH": 48, "TRAIN.MAX_EPOCH": 6}))
    s = train(cfg)
    assert s["val"]["ma"] >= 0.8, s["val"]
    assert s["val"]["ma"] > s["majority_val"]["ma"] + 0.25


def test_run_py_writes_every_result_file_and_eval_mode(tmp_path):
    import run

    opts = tiny_opts(tmp_path, **{"VIS.TENSORBOARD": "True"})
    assert run.main(["--config-file", str(REPO / "configs/demo.yaml"), *opts]) == 0
    exp = tmp_path / "exp" / "SYNTH" / "demo"
    for f in RESULT_FILES:
        assert (exp / f).is_file() and (exp / f).stat().st_size > 0, f
    assert any((exp / "tensorboard").iterdir())
    rows = (exp / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3 and "val_ma" in rows[0] and "test_ma" in rows[0]
    summary = json.loads((exp / "summary.json").read_text())
    assert summary["test"] is not None and 0 <= summary["val"]["ma"] <= 1

    # --mode eval on the val split reproduces the best epoch's validation metrics
    assert run.main(["--config-file", str(REPO / "configs/demo.yaml"), "--mode", "eval", *opts,
                     "TEST.SPLIT", "val"]) == 0
    ev = json.loads((exp / "eval_val.json").read_text())
    best = json.loads((exp / "best_metrics.json").read_text())["val"]
    assert ev["ma"] == pytest.approx(best["ma"]) and ev["instance_f1"] == pytest.approx(best["instance_f1"])
    assert (exp / "eval_val_attributes.csv").is_file()

    # a finished run is not overwritten by accident
    from tools.engine import ExperimentExists

    with pytest.raises(ExperimentExists, match="--overwrite"):
        run.main(["--config-file", str(REPO / "configs/demo.yaml"), *opts])


def test_two_runs_of_the_same_config_give_identical_metrics(tmp_path):
    from configs import load_config
    from tools.engine import run_training as train

    runs = []
    for k in range(2):
        cfg = load_config(REPO / "configs/demo.yaml", tiny_opts(tmp_path, NAME=f"rep{k}"))
        runs.append(train(cfg))
    assert runs[0]["val"] == runs[1]["val"] and runs[0]["test"] == runs[1]["test"]


def test_without_a_terminal_the_epoch_logs_its_progress(caplog):
    """A run whose output goes to a log file (nohup, CI) still shows where the epoch is and how long is left."""
    import logging

    import torch
    from torch import nn

    from tools.engine.loop import EpochOptions, StepOptions, SupervisedTask, run_epoch

    class BCE(nn.Module):
        def forward(self, logits, y):
            return nn.functional.binary_cross_entropy_with_logits(logits, y), {}

    model = nn.Linear(4, 3)
    loader = [(torch.randn(2, 4), torch.randint(0, 2, (2, 3)).float(), None) for _ in range(3)]
    task = SupervisedTask(model, BCE(), torch.optim.SGD(model.parameters(), lr=0.1),
                          StepOptions(device=torch.device("cpu")))
    with caplog.at_level(logging.INFO, logger="tools.engine.loop"):
        res = run_epoch(loader, task, task.opt, EpochOptions(epoch=4, log_every_s=0.0))  # pytest's stderr is no tty
    assert res.steps == 3
    lines = [r.getMessage() for r in caplog.records if "img/s" in r.getMessage()]
    assert [ln.split(":")[1].split(",")[0].strip() for ln in lines] == ["step 1/3", "step 2/3", "step 3/3"]
    assert lines[0].startswith("epoch 4 train") and "min left in the epoch" in lines[0]
    with caplog.at_level(logging.INFO, logger="tools.engine.loop"):
        caplog.clear()
        run_epoch(loader, task, task.opt, EpochOptions(progress=False, log_every_s=0.0))  # not the main rank
    assert not [r for r in caplog.records if "img/s" in r.getMessage()]
