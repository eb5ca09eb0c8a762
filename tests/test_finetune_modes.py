"""FINETUNE.MODE on a C2T-Net: after one optimizer step exactly the intended parameters moved,
frozen BatchNorm statistics stayed, frozen branches ran in eval mode and without autograd."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from configs.default import get_cfg_defaults
from models import build_model
from models.freeze import apply_finetune_mode
from tools.engine import build_optimizer

N_ATTR = 4


@pytest.fixture(scope="module")
def base():
    cfg = get_cfg_defaults()
    cfg.MODEL.NAME = "c2t_lite"  # EfficientNet (BatchNorm) + ViT-Tiny + TA + fusion
    cfg.MODEL.HEAD_BN = True
    cfg.DATASET.HEIGHT, cfg.DATASET.WIDTH = 64, 32
    torch.manual_seed(0)
    return cfg, build_model(cfg, N_ATTR)


def names_of(model, groups) -> set[str]:
    ids = {id(p) for g in groups for m in model.param_groups()[g] for p in m.parameters()}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def bn_stats(module) -> dict[str, torch.Tensor]:
    return {n: b.clone() for n, b in module.named_buffers() if "running_" in n}


def one_step(cfg, model):
    """One real training step with the framework's optimizer; returns which outputs needed autograd."""
    seen = {}
    hooks = [m.register_forward_hook(lambda _m, _i, out, k=k: seen.__setitem__(k, out.requires_grad))
             for k, m in (("vit", model.backbone.vit.blocks[-1]), ("spatial", model.backbone.spatial))]
    model.train()
    opt = build_optimizer(cfg, model)
    torch.manual_seed(1)
    x, y = torch.rand(4, 3, 64, 32), torch.randint(0, 2, (4, N_ATTR)).float()
    loss = F.binary_cross_entropy_with_logits(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    for h in hooks:
        h.remove()
    return opt, seen


@pytest.mark.parametrize("mode,train_ta,trained", [
    ("full", False, {"spatial", "ta", "vit", "fusion", "head"}),
    ("partial", False, {"fusion", "head"}),
    ("partial", True, {"ta", "fusion", "head"}),
    ("head", False, {"head"}),
])
def test_one_step_moves_exactly_the_intended_parameters(base, mode, train_ta, trained):
    cfg, built = base
    cfg = cfg.clone()
    cfg.TRAIN.OPTIMIZER.TYPE, cfg.TRAIN.OPTIMIZER.WEIGHT_DECAY = "adam", 0.0
    cfg.TRAIN.LR_SCHEDULER.LR_FT = cfg.TRAIN.LR_SCHEDULER.LR_NEW = 1e-2
    model = copy.deepcopy(built)
    counts = apply_finetune_mode(model, mode, train_ta)
    assert {g for g, (t, _) in counts.items() if t} == trained
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    spatial_bn = bn_stats(model.backbone.spatial)
    head_bn = bn_stats(model.head)

    opt, seen = one_step(cfg, model)

    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == names_of(model, trained)
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert in_opt == {id(p) for n, p in model.named_parameters() if n in names_of(model, trained)}
    # BatchNorm statistics move only where the branch trains
    moved = [n for n, v in bn_stats(model.backbone.spatial).items() if not torch.equal(v, spatial_bn[n])]
    assert bool(moved) == ("spatial" in trained)
    assert any(not torch.equal(v, head_bn[n]) for n, v in bn_stats(model.head).items())  # the head always trains
    # frozen branches: eval mode, and no activations kept for backward (TA upstream needs the spatial graph)
    assert model.backbone.spatial.training == ("spatial" in trained)
    assert model.backbone.vit.training == ("vit" in trained)
    assert seen == {"vit": "vit" in trained, "spatial": bool({"spatial", "ta"} & trained)}


def test_eval_mode_and_no_grad_are_kept_for_frozen_branches(base):
    cfg, built = base
    model = copy.deepcopy(built)
    apply_finetune_mode(model, "head")
    model.train()
    assert model.head.training
    assert not any(m.training for g in ("spatial", "ta", "vit", "fusion") for m in model.param_groups()[g])
    feat = model.forward_features(torch.rand(2, 3, 64, 32))
    assert not feat.requires_grad  # the whole backbone ran without autograd
    x = torch.rand(2, 3, 64, 32, requires_grad=True)  # ... unless the caller wants input gradients
    model.forward_features(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_partial_needs_fusion_layers():
    from models.freeze import trainable_groups

    with pytest.raises(ValueError, match="partial needs a model with cross-fusion"):
        trainable_groups("partial", ["backbone", "head"])
    with pytest.raises(ValueError, match="FINETUNE.MODE = 'some' is not one of"):
        trainable_groups("some", ["backbone", "head"])
