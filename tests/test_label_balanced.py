"""Label-balanced learning (ICML 2024): the split head, FRDL's feature banks, GOAT's flooding loss and reset,
stage 2 as a run (only the new heads change under FRDL, best_model.pth = stage-1 extractor + new heads,
bit-identical resume mid-stage-2), the balanced-test view, and inference / ONNX of a split-head checkpoint."""
from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest
import torch

from tests.conftest import REPO
from tests.robustness._helpers import assert_same_state, metrics_rows, summary
from tools.checkpoint import load_checkpoint

DEMO = REPO / "configs" / "demo.yaml"
STAGE2 = {"TRAIN.MAX_EPOCH": 3, "RELOAD.TYPE": True, "RELOAD.MODEL_FOLDER_NAME": "stage1", "STAGE2.NUMBER": 1,
          "STAGE2.RESET_EVERY": 2, "STAGE2.BANK_SIZE": 32, "TRAIN.LR_SCHEDULER.TYPE": "multistep",
          "TRAIN.LR_SCHEDULER.LR_STEP": "[2]", "TRAIN.LR_SCHEDULER.LR_NEW": 0.003, "STAGE2.EXTRACTOR_LR": 0.001}


def _opts(root, **extra) -> list[str]:
    opts = {"OUTPUT_DIR": root / "exp", "DATASET.ROOT": root / "synth", "DATASET.SYNTH_SIZE": 120,
            "DATASET.HEIGHT": 64, "DATASET.WIDTH": 32, "MODEL.BACKBONE": "test_resnet", "MODEL.HEAD": "split",
            "TRAIN.BATCH_SIZE": 16, "TRAIN.MAX_EPOCH": 2, "DEVICE": "cpu", "VIS.TENSORBOARD": False,
            "VIS.PLOTS": False, "REDIRECTOR": False, **extra}
    return [str(x) for kv in opts.items() for x in kv]


def _cfg(root, **extra):
    from configs import load_config

    return load_config(DEMO, _opts(root, **extra))


def _train(root, **extra) -> dict:
    from tools.engine import run_training

    return run_training(_cfg(root, **extra))


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A split-head stage-1 run (plain BCE) that every stage-2 run starts from."""
    root = tmp_path_factory.mktemp("lb")
    _train(root, NAME="stage1", **{"METRIC.BALANCED": True})
    return root


def _exp(root, name):
    return root / "exp" / "SYNTH" / name


# ----------------------------------------------------------------------------- the pieces
def test_split_head_is_vectorised_and_grouped():
    from models.par_model import PARModel
    from models.timm_backbone import TimmBackbone

    model = PARModel(TimmBackbone("test_resnet", (64, 32)), 5, head="split").eval()
    x = torch.rand(3, 3, 64, 32)
    z = model.forward_attr_features(x)
    assert z.shape == (3, 5, model.backbone.out_dim)
    w, b = model.head.classifier.weight, model.head.classifier.bias
    by_hand = torch.stack([torch.relu(z[:, j]) @ w[j] + b[j] for j in range(5)], 1)
    torch.testing.assert_close(model(x), by_hand)
    groups = model.param_groups()
    assert list(groups)[-2:] == ["split", "head"] and groups["head"] == [model.head.classifier]


def test_banks_balance_every_attribute_whatever_the_natural_share():
    from tools.engine.label_balanced import FeatureBanks

    gen = torch.Generator().manual_seed(0)
    banks, n_attrs = FeatureBanks(4, 2, 64, torch.device("cpu")), 4
    natural = []
    for _ in range(30):  # features carry their label (channel 0) and attribute (channel 1)
        y = (torch.rand(64, n_attrs, generator=gen) < 0.05).float()
        natural.append(y)
        banks.push(torch.stack([y, torch.arange(n_attrs).float().expand_as(y)], -1), y)
    assert abs(torch.cat(natural).mean().item() - 0.05) < 0.01
    draws = [banks.draw(64, 0.5, gen) for _ in range(200)]
    feats, labels = torch.cat([f for f, _ in draws]), torch.cat([lab for _, lab in draws])
    share = labels.mean(0)
    assert ((share - 0.5).abs() < 0.02).all(), share
    assert torch.equal(feats[..., 0], labels) and torch.equal(feats[..., 1], torch.arange(4.0).expand_as(labels))


def test_banks_are_fifo_of_the_most_recent_features_and_skip_unknown_labels():
    from tools.engine.label_balanced import FeatureBanks

    banks = FeatureBanks(1, 1, 4, torch.device("cpu"))
    ids = torch.arange(10.0).view(10, 1, 1)
    y = torch.tensor([1, 1, -1, 1, 1, 1, 1, 1, 0, 1.0]).view(10, 1)  # 8 positives in one batch: the last 4 stay
    banks.push(ids, y)
    assert banks.count.tolist() == [[1, 4]] and sorted(banks.feats[0, 1, :4, 0].tolist()) == [5, 6, 7, 9]
    banks.push(torch.tensor([[[20.0]], [[21.0]]]), torch.ones(2, 1))  # overwrites the two oldest
    assert sorted(banks.feats[0, 1, :4, 0].tolist()) == [7, 9, 20, 21] and banks.feats[0, 0, 0, 0] == 8


def test_flooding_gradient_changes_sign_at_the_flood_level():
    from losses.flooding import elementwise_bce, flooding_loss

    level = 0.3  # y = 1: BCE softplus(-z) falls with z; above the level the flood descends, below it ascends
    for z0, sign in ((-1.0, -1.0), (0.5, -1.0), (2.0, 1.0), (4.0, 1.0)):
        z = torch.tensor([[z0]], requires_grad=True)
        ell = elementwise_bce(z, torch.ones(1, 1))
        flooding_loss(ell, torch.full((1, 1), level), torch.ones(1, 1, dtype=torch.bool)).backward()
        bce_grad = -torch.sigmoid(-torch.tensor(z0))
        assert torch.sign(z.grad).item() == sign and torch.isclose(z.grad.abs(), bce_grad.abs()), (z0, z.grad)
    z = torch.tensor([[0.0]])
    ell = elementwise_bce(z, torch.ones(1, 1))
    assert torch.isclose(flooding_loss(ell, ell.clone(), torch.ones(1, 1, dtype=torch.bool)), ell.sum())


def test_reset_restores_the_extractor_bit_for_bit_and_clears_its_optimiser(tmp_path):
    from losses import build_loss
    from models import build_model
    from tools.engine.label_balanced import LabelBalanced
    from tools.engine.loop import StepOptions
    from tools.engine.stage2 import Stage2Loop, Stage2Options, stage2_optimizers

    cfg = _cfg(tmp_path, **{"TRAIN.STAGE2": "goat", "RELOAD.TYPE": True})
    model = build_model(cfg, 6)
    stage1 = {k: v.clone() for k, v in model.state_dict().items()}
    lb = LabelBalanced(model, "goat", 8, 0)
    head_opt, ext_opt = stage2_optimizers(cfg, model, True)
    fresh = ext_opt.state_dict()
    loop = Stage2Loop(model, lb, build_loss(cfg, [f"a{i}" for i in range(6)], [], None, model), (head_opt, ext_opt),
                      Stage2Options(StepOptions(device=torch.device("cpu")), reset_every=1000))
    lb.flood.levels.fill_(0.2)
    model.eval()
    loop.epoch = 1
    for _ in range(3):
        loss, _ = loop.losses(torch.rand(8, 3, 64, 32), (torch.rand(8, 6) < 0.3).float())
        loop.optimise(loss)
    moved = [k for k in lb.snapshot.tensors if not torch.equal(model.state_dict()[k], stage1[k])]
    assert moved and ext_opt.state and not any(k.startswith("head.classifier") for k in lb.snapshot.tensors)
    new_heads = model.head.classifier.weight.detach().clone()
    loop.reset()
    own = model.state_dict()
    assert all(torch.equal(own[k], stage1[k]) for k in lb.snapshot.tensors)
    assert torch.equal(model.head.classifier.weight, new_heads)  # the new heads are not reset
    assert not ext_opt.state and ext_opt.state_dict() == fresh


# ----------------------------------------------------------------------------- stage 2 as a run
def test_frdl_with_the_extractor_frozen_changes_only_the_new_heads(root):
    _train(root, NAME="frdl", **{**STAGE2, "TRAIN.STAGE2": "frdl"})
    s1 = load_checkpoint(_exp(root, "stage1") / "best_model.pth")["model"]
    last = load_checkpoint(_exp(root, "frdl") / "last.pth")
    changed = {k for k, v in last["model"].items() if not torch.equal(v, s1[k])}
    assert changed == {"head.classifier.weight", "head.classifier.bias"}
    heads = last["stage2"]["stage1_heads"]
    assert torch.equal(heads["weight"], s1["head.classifier.weight"])
    assert torch.equal(heads["bias"], s1["head.classifier.bias"])
    banks = last["stage2"]["banks"]
    assert banks["count"].min() > 0 and last["extractor_optimizer"] is None
    rows = metrics_rows(_exp(root, "frdl"))
    assert {"val_bal_ma", "test_bal_ma", "train_bce"} <= set(rows[0])
    assert "val_bal_ma" in metrics_rows(_exp(root, "stage1"))[0]  # METRIC.BALANCED on a plain run


def test_goat_best_model_is_the_stage1_extractor_with_the_new_heads(root):
    _train(root, NAME="goat", **{**STAGE2, "TRAIN.STAGE2": "frdl_goat"})
    s1 = load_checkpoint(_exp(root, "stage1") / "best_model.pth")["model"]
    best = load_checkpoint(_exp(root, "goat") / "best_model.pth")
    last = load_checkpoint(_exp(root, "goat") / "last.pth")
    assert all(torch.equal(v, s1[k]) for k, v in best["model"].items() if not k.startswith("head.classifier"))
    assert not torch.equal(best["model"]["head.classifier.weight"], s1["head.classifier.weight"])
    assert last["stage2"]["flood"]["levels"].min() > 0 and float(metrics_rows(_exp(root, "goat"))[1]["train_flood"]) > 0


def test_stage2_resumed_mid_epoch_ends_bit_identical(root, monkeypatch):
    """Stop requests in epoch 0 (flood levels half recorded) and epoch 2 (GOAT + re-sampling), resume each time."""
    from tools.engine import run_training
    from tools.engine.stage2 import Stage2Loop

    opts = {**STAGE2, "TRAIN.STAGE2": "frdl_goat"}
    real = Stage2Loop.optimise
    plan = [(0, 3), (2, 2)]  # (epoch, step): a SIGTERM after that optimiser step
    calls = {}

    def optimise(self, loss):
        real(self, loss)
        epoch = self.epoch
        calls[epoch] = calls.get(epoch, 0) + 1
        if plan and plan[0] == (epoch, calls[epoch]):
            plan.pop(0)
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(Stage2Loop, "optimise", optimise)
    for _ in range(2):
        calls.clear()
        with pytest.raises(KeyboardInterrupt, match="stopped at epoch"):
            run_training(_cfg(root, NAME="resumed", **opts, **{"TRAIN.RESUME": "auto"}))
    run_training(_cfg(root, NAME="resumed", **opts, **{"TRAIN.RESUME": "auto"}))
    monkeypatch.setattr(Stage2Loop, "optimise", real)
    ref, exp = _exp(root, "goat"), _exp(root, "resumed")  # the uninterrupted run of the test above
    if not (ref / "summary.json").is_file():
        _train(root, NAME="goat", **opts)
    assert summary(exp) == summary(ref) and metrics_rows(exp) == metrics_rows(ref)
    a, b = load_checkpoint(exp / "last.pth"), load_checkpoint(ref / "last.pth")
    for key in ("model", "optimizer", "extractor_optimizer", "scheduler", "stage2", "epoch", "best_epoch"):
        assert_same_state(a[key], b[key], key)
    best_a, best_b = (load_checkpoint(d / "best_model.pth")["model"] for d in (exp, ref))
    assert_same_state(best_a, best_b, "best_model")


def test_split_head_checkpoint_evaluates_predicts_and_exports(root):
    """--mode eval on the stage-2 best_model.pth reproduces training's validation; predictor and ONNX work."""
    import run
    from tools.inference import Predictor

    exp = _exp(root, "goat")
    if not (exp / "best_model.pth").is_file():
        _train(root, NAME="goat", **{**STAGE2, "TRAIN.STAGE2": "frdl_goat"})
    assert run.main(["--config-file", str(exp / "config.yaml"), "--mode", "eval", "TEST.SPLIT", "val"]) == 0
    best = json.loads((exp / "best_metrics.json").read_text())["val"]
    ev = json.loads((exp / "eval_val.json").read_text())
    assert abs(best["ma"] - ev["ma"]) < 1e-9
    trained, evaluated = np.load(exp / "predictions_best_val.npz"), np.load(exp / "eval_val_predictions.npz")
    np.testing.assert_allclose(evaluated["probs"], trained["probs"], atol=1e-6)
    pred = Predictor.from_checkpoint(exp / "best_model.pth", device="cpu")
    images = sorted((root / "synth").rglob("*.png"))[:3]
    probs = pred.predict_images([str(p) for p in images])
    assert probs.shape == (3, len(pred.attr_names)) and ((probs >= 0) & (probs <= 1)).all()
    pytest.importorskip("onnxruntime")
    from scripts.export_onnx import main as export

    assert export(["--checkpoint", str(exp / "best_model.pth"), "--out", str(root / "split.onnx")]).is_file()


# ----------------------------------------------------------------------------- metrics and config
def test_balanced_view_takes_min_pos_neg_of_each_attribute_reproducibly():
    from tools.evaluation.balanced import balanced_mask, balanced_metrics

    rng = np.random.default_rng(1)
    labels = (rng.random((200, 3)) < [0.05, 0.5, 0.9]).astype(int)
    labels[:10, 1] = -1
    mask = balanced_mask(labels, seed=3)
    for j in range(3):
        n = min((labels[:, j] == 1).sum(), (labels[:, j] == 0).sum())
        assert ((labels[:, j] == 1) & mask[:, j]).sum() == n == ((labels[:, j] == 0) & mask[:, j]).sum()
    assert not mask[:10, 1].any() and np.array_equal(mask, balanced_mask(labels, seed=3))
    m = balanced_metrics(np.where(labels > 0, 0.9, 0.1), labels, seed=3)
    assert m["ma"] == 1.0 and m["n_samples"] == int(mask.any(1).sum())


def test_stage2_config_mistakes_name_the_key(tmp_path):
    from configs.errors import ConfigError

    with pytest.raises(ConfigError, match="MODEL.HEAD split"):
        _cfg(tmp_path, **{"TRAIN.STAGE2": "frdl", "RELOAD.TYPE": True, "MODEL.HEAD": "linear"})
    with pytest.raises(ConfigError, match="RELOAD.TYPE"):
        _cfg(tmp_path, **{"TRAIN.STAGE2": "goat"})
    with pytest.raises(ConfigError, match="plain BCE"):
        _cfg(tmp_path, **{"TRAIN.STAGE2": "goat", "RELOAD.TYPE": True, "LOSS.SAMPLE_WEIGHT": "weight"})
