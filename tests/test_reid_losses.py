"""Every ReID loss against a value computed by hand (or with a plain numpy formula), and the embedding head."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from yacs.config import CfgNode as CN

from configs import ConfigError, get_cfg_defaults
from losses.reid import (CenterLoss, IDLoss, TripletLoss, build_reid_losses, label_smooth_ce, margin_logits)
from models.reid_head import GeM, ReIDHead, backbone_map, build_reid_head


def np_ce(logits: list[float], y: int, eps: float = 0.0) -> float:
    z = np.asarray(logits, np.float64)
    logp = z - np.log(np.exp(z).sum())
    q = np.full(len(z), eps / len(z))
    q[y] += 1 - eps
    return float(-(q * logp).sum())


def test_label_smoothing_ce():
    z = torch.tensor([[1.0, 2.0, 3.0], [0.5, -1.0, 0.0]])
    y = torch.tensor([2, 0])
    want = (np_ce([1, 2, 3], 2, 0.1) + np_ce([0.5, -1, 0], 0, 0.1)) / 2
    assert label_smooth_ce(z, y, 0.1).item() == pytest.approx(want, rel=1e-6)
    # eps = 0 is the plain cross-entropy: log(1 + e^-1 + e^-2) for the first row
    assert label_smooth_ce(z[:1], y[:1], 0.0).item() == pytest.approx(math.log(1 + math.exp(-1) + math.exp(-2)))


def test_cosface_by_hand():
    cos, y = torch.tensor([[0.8, 0.3]]), torch.tensor([0])
    # s (cos_y - m) = 10 (0.8 - 0.2) = 6, other 3 -> CE = log(1 + e^(3 - 6))
    assert margin_logits(cos, y, "cosface", 10.0, 0.2)[0].tolist() == pytest.approx([6.0, 3.0])
    assert IDLoss("cosface", 10.0, 0.2, 0.0)(cos, y).item() == pytest.approx(math.log(1 + math.exp(-3)))


def test_arcface_by_hand():
    cos, y = torch.tensor([[0.8, 0.3], [-0.95, 0.1]]), torch.tensor([0, 0])
    z = margin_logits(cos, y, "arcface", 10.0, 0.5)
    assert z[0, 0].item() == pytest.approx(10 * math.cos(math.acos(0.8) + 0.5), rel=1e-5)
    assert z[0, 1].item() == pytest.approx(3.0)
    # theta + m > pi: the fallback cos - m sin(m) keeps the logit monotone
    assert z[1, 0].item() == pytest.approx(10 * (-0.95 - 0.5 * math.sin(0.5)), rel=1e-5)
    loss = IDLoss("arcface", 10.0, 0.5, 0.0)(cos[:1], y[:1]).item()
    assert loss == pytest.approx(np_ce([10 * math.cos(math.acos(0.8) + 0.5), 3.0], 0), rel=1e-5)


def test_circle_by_hand():
    cos, y = torch.tensor([[0.8, 0.3]], requires_grad=True), torch.tensor([0])
    # a_p = 1.25 - 0.8 = 0.45, s_p = 10 * 0.45 * (0.8 - 0.75) = 0.225; a_n = 0.55, s_n = 10 * 0.55 * 0.05 = 0.275
    z = margin_logits(cos, y, "circle", 10.0, 0.25)
    assert z[0].tolist() == pytest.approx([0.225, 0.275], rel=1e-5)
    loss = IDLoss("circle", 10.0, 0.25, 0.0)(cos, y)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(0.05)), rel=1e-5)
    loss.backward()  # the weights a_p, a_n carry no gradient: d s_p / d cos_y = s a_p
    p = 1 / (1 + math.exp(0.05))
    assert cos.grad[0, 0].item() == pytest.approx(-(1 - p) * 10 * 0.45, rel=1e-5)


POINTS = torch.tensor([[0.0, 0.0], [3.0, 4.0], [1.0, 0.0], [0.0, 2.0]])
LABELS = torch.tensor([0, 0, 1, 1])


def test_batch_hard_triplet_by_hand():
    # d01 = 5, d02 = 1, d03 = 2, d12 = sqrt 20, d13 = sqrt 13, d23 = sqrt 5; per anchor (hardest pos, neg):
    # 0: (5, 1), 1: (5, sqrt 13), 2: (sqrt 5, 1), 3: (sqrt 5, 2)
    gaps = [5 - 1, 5 - math.sqrt(13), math.sqrt(5) - 1, math.sqrt(5) - 2]
    hard = TripletLoss(margin=0.3)(POINTS, LABELS).item()
    assert hard == pytest.approx(np.mean([max(g + 0.3, 0) for g in gaps]), rel=1e-5)
    soft = TripletLoss(soft=True)(POINTS, LABELS).item()
    assert soft == pytest.approx(np.mean([math.log1p(math.exp(g)) for g in gaps]), rel=1e-5)


def test_triplet_skips_anchors_without_positive():
    x = torch.cat([POINTS, torch.tensor([[10.0, 10.0]])])
    y = torch.cat([LABELS, torch.tensor([7])])  # a singleton identity: a negative, never an anchor
    # anchor 1's nearest negative is still sqrt 13 (the new point is farther), the others unchanged
    assert TripletLoss(0.3)(x, y).item() == pytest.approx(TripletLoss(0.3)(POINTS, LABELS).item(), rel=1e-6)
    zero = TripletLoss(0.3)(torch.ones(2, 3, requires_grad=True), torch.tensor([0, 1]))
    assert zero.item() == 0.0 and zero.requires_grad


def test_center_loss_by_hand():
    loss = CenterLoss(2, 2)
    with torch.no_grad():
        loss.centers.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
    # ||(1, 2) - (0, 0)||^2 = 5, ||(3, 4) - (1, 1)||^2 = 13 -> mean 9
    assert loss(torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([0, 1])).item() == pytest.approx(9.0)


def reid_node(**kw) -> CN:
    node = get_cfg_defaults().REID
    for k, v in kw.items():
        node[k] = v
    return node


def test_builder_weights_the_terms():
    crit = build_reid_losses(reid_node(ID_LOSS="cosface", SCALE=10.0, MARGIN=0.2, LABEL_SMOOTH=0.0,
                                       TRIPLET_WEIGHT=0.5, CENTER_WEIGHT=0.1), num_classes=2, feat_dim=2)
    with torch.no_grad():
        crit.terms[2].centers.zero_()
    out = {"feat": POINTS[:2], "logits": torch.tensor([[0.8, 0.3], [0.3, 0.8]])}
    y = torch.tensor([0, 1])
    total, parts = crit(out, y)
    assert set(parts) == {"id", "triplet", "center"}
    assert parts["id"].item() == pytest.approx(math.log(1 + math.exp(-3)), rel=1e-5)
    assert parts["triplet"].item() == pytest.approx(0.0)  # two identities of one image each: no positive
    assert parts["center"].item() == pytest.approx((0 + 25) / 2)
    assert total.item() == pytest.approx(parts["id"].item() + 0.1 * 12.5, rel=1e-5)
    with pytest.raises(ConfigError, match="REID.TRIPLET"):
        build_reid_losses(reid_node(TRIPLET="semi"), 3, 2)
    with pytest.raises(ConfigError, match="every loss is off"):
        build_reid_losses(reid_node(ID_LOSS="none", TRIPLET="none"), 3, 2)


# ----------------------------------------------------------------------------- head
def test_gem_by_hand():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 1, 2, 2)
    assert GeM(3.0)(x).item() == pytest.approx(((1 + 8 + 27 + 64) / 4) ** (1 / 3), rel=1e-5)
    assert GeM(1.0)(x).item() == pytest.approx(2.5)


def test_bnneck_head():
    torch.manual_seed(0)
    head = ReIDHead(8, 5, pool="avg")
    assert not head.bn.bias.requires_grad and head.classifier.bias is None
    maps = torch.rand(6, 8, 4, 2)
    out = head(maps)
    assert out["feat"].shape == (6, 8) and out["logits"].shape == (6, 5)
    assert torch.allclose(out["feat"], maps.mean((2, 3)))
    # training mode: the post-BN feature is the batch-standardised pre-BN one (weight 1, bias 0)
    f = out["feat"]
    want = (f - f.mean(0)) / torch.sqrt(f.var(0, unbiased=False) + head.bn.eps)
    assert torch.allclose(out["bn_feat"], want, atol=1e-5)
    head.eval()
    assert torch.allclose(head.embed(f), head(f)["bn_feat"])  # pooled input passes through
    cos_head = ReIDHead(8, 5, cosine=True)
    assert cos_head(maps)["logits"].abs().max() <= 1.0 + 1e-6


def test_head_from_config_and_backbone_map():
    cfg = get_cfg_defaults()
    cfg.REID.ID_LOSS, cfg.REID.POOL = "arcface", "gem"
    head = build_reid_head(cfg, 16, 4)
    assert isinstance(head.pool, GeM) and head.classifier.__class__.__name__ == "CosineClassifier"
    cfg.REID.POOL = "max"
    with pytest.raises(ConfigError, match="REID.POOL"):
        build_reid_head(cfg, 16, 4)
    from models.timm_backbone import TimmBackbone

    bb = TimmBackbone("resnet10t", (64, 32)).eval()
    x = torch.rand(2, 3, 64, 32)
    fmap = backbone_map(bb, x)
    assert fmap.dim() == 4 and fmap.shape[1] == bb.out_dim
    with torch.no_grad():
        assert torch.allclose(fmap.mean((2, 3)), bb(x), atol=1e-5)  # avg pooling of the map = the backbone feature
