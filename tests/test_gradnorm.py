"""GradNorm: one update checked against a NumPy hand computation, the weights moving the right way on
a toy problem (one easy, one unlearnable attribute), summing to T, and exact resume."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from torch import nn

from configs.loader import ConfigError, load_config
from losses import GradNormError, build_loss


class LinearShared(nn.Module):
    """x -> W x + b (shared, GradNorm's W) -> head V -> one logit per attribute."""

    def __init__(self, d_in: int, hidden: int, num_attrs: int, relu: bool = False):
        super().__init__()
        self.shared = nn.Linear(d_in, hidden)
        self.head = nn.Linear(hidden, num_attrs)
        self.relu = relu

    def forward(self, x):
        h = self.shared(x)
        return self.head(torch.relu(h) if self.relu else h)

    def shared_params(self):
        return list(self.shared.parameters())


def gradnorm(model, num_attrs, alpha=1.5, lr=0.025, extra=()):
    cfg = load_config(None, ["LOSS.TYPE", "gradnormloss", "LOSS.GRADNORM_ALPHA", str(alpha),
                             "LOSS.GRADNORM_LR", str(lr), *extra])
    return build_loss(cfg, [f"a{j}" for j in range(num_attrs)], [], None, model)


def test_one_update_matches_hand_computation():
    torch.manual_seed(0)
    model = LinearShared(4, 5, 3)
    crit = gradnorm(model, 3, lr=0.1)
    x = torch.randn(8, 4)
    y = (torch.rand(8, 3) > 0.5).float()

    loss, parts = crit(model(x), y)

    # NumPy: per-attribute BCE (sum over attributes, mean over batch) and ||dL_j/d(W, b)||
    X = x.double().numpy()
    Wt, b = model.shared.weight.detach().double().numpy(), model.shared.bias.detach().double().numpy()
    V, c = model.head.weight.detach().double().numpy(), model.head.bias.detach().double().numpy()
    Y = y.double().numpy()
    z = (X @ Wt.T + b) @ V.T + c
    L = (np.maximum(z, 0) - z * Y + np.log1p(np.exp(-np.abs(z)))).mean(0)
    e = (1 / (1 + np.exp(-z)) - Y) / len(X)  # dL_j/dz_bj
    g = np.array([np.linalg.norm(V[j]) * np.sqrt(np.sum((e[:, j] @ X) ** 2) + np.sum(e[:, j]) ** 2)
                  for j in range(3)])
    # first step: L(0) = L(t), so r_j = 1 and every target is mean(G); dL_grad/dw_j = sign(G_j - mean G) g_j
    dw = np.sign(g - g.mean()) * g
    w = 1.0 - 0.1 * dw / (np.abs(dw) + 1e-8)  # Adam's first step is lr * sign(grad)
    w = w * 3 / w.sum()

    assert loss.item() == pytest.approx(L.sum(), rel=1e-5)  # trained on the weights before the step (1)
    np.testing.assert_allclose(crit.terms[0].initial_losses.numpy(), L, rtol=1e-5)
    np.testing.assert_allclose(crit.terms[0].weights.detach().numpy(), w, rtol=1e-5)
    assert parts["gradnorm_grad_loss"].item() == pytest.approx(np.abs(g - g.mean()).sum(), rel=1e-4)
    # the weights were moved by autograd.grad: nothing leaked into the model's .grad
    assert all(p.grad is None for p in model.parameters())

    loss2, _ = crit(model(x), y)  # next step trains on the new weights
    assert loss2.item() == pytest.approx(float((w * L).sum()), rel=1e-5)


def test_weights_move_towards_the_hard_attribute_and_sum_to_T():
    torch.manual_seed(0)
    n, d = 256, 8
    x = torch.randn(n, d)
    easy = (x[:, 0] > 0).float()  # linearly separable, learnt within a few steps
    hard = (torch.rand(n) > 0.5).float()  # random labels: its loss hardly falls
    y = torch.stack([easy, hard], 1)
    model = LinearShared(d, 16, 2, relu=True)
    crit = gradnorm(model, 2, alpha=1.5, lr=0.025)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    history = []
    for _ in range(60):
        loss, _ = crit(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        w = crit.terms[0].weights.detach()
        assert w.sum().item() == pytest.approx(2.0, abs=1e-5) and bool((w > 0).all())
        history.append(w.clone())
    w = history[-1]
    L0 = crit.terms[0].initial_losses
    assert L0[0] > 0 and L0[1] > 0
    assert w[1] > 1.3 and w[0] < 0.7, f"weights did not move towards the hard attribute: {w.tolist()}"
    assert history[10][1] < history[-1][1]  # and keep moving, the optimizer state persists


def test_eval_mode_and_no_grad_leave_the_weights_alone():
    torch.manual_seed(0)
    model = LinearShared(4, 5, 3)
    crit = gradnorm(model, 3)
    x, y = torch.randn(8, 4), (torch.rand(8, 3) > 0.5).float()
    crit.eval()
    crit(model(x), y)
    crit.train()
    with torch.no_grad():
        crit(model(x), y)
    assert torch.equal(crit.terms[0].weights.detach(), torch.ones(3))
    assert not crit.terms[0].initial_set.any()


def test_resume_from_state_dict_is_identical():
    def setup():
        torch.manual_seed(0)
        m = LinearShared(4, 6, 3, relu=True)
        return m, gradnorm(m, 3, lr=0.05), torch.optim.SGD(m.parameters(), lr=0.1)

    def step(m, crit, opt, x, y):
        loss, _ = crit(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(8, 4, generator=g), (torch.rand(8, 3, generator=g) > 0.5).float()) for _ in range(6)]
    m1, c1, o1 = setup()
    for x, y in batches[:3]:
        step(m1, c1, o1, x, y)
    buf = io.BytesIO()
    torch.save({"model": m1.state_dict(), "criterion": c1.state_dict(), "opt": o1.state_dict()}, buf)
    buf.seek(0)
    ck = torch.load(buf, weights_only=True)  # the checkpoint loader's setting
    assert "terms.0._extra_state" in ck["criterion"] and ck["criterion"]["terms.0._extra_state"]["optimizer"]["state"]

    m2, c2, o2 = setup()
    m2.load_state_dict(ck["model"])
    c2.load_state_dict(ck["criterion"])
    o2.load_state_dict(ck["opt"])
    for x, y in batches[3:]:
        step(m1, c1, o1, x, y)
        step(m2, c2, o2, x, y)
    assert torch.equal(c1.terms[0].weights, c2.terms[0].weights)
    assert not torch.equal(c1.terms[0].weights.detach(), torch.ones(3))
    for a, b in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(a, b)


def test_works_under_bf16_autocast():
    torch.manual_seed(0)
    model = LinearShared(4, 5, 3)
    crit = gradnorm(model, 3)
    x, y = torch.randn(8, 4), (torch.rand(8, 3) > 0.5).float()
    for _ in range(3):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss, _ = crit(model(x), y)
        loss.backward()
    w = crit.terms[0].weights.detach()
    assert loss.dtype == torch.float32 and torch.isfinite(w).all()
    assert w.sum().item() == pytest.approx(3.0, abs=1e-5) and not torch.equal(w, torch.ones(3))


def test_needs_the_model_and_a_trainable_shared_layer():
    with pytest.raises(ConfigError, match="needs the model"):
        gradnorm(None, 3)
    model = LinearShared(4, 5, 3)
    for p in model.shared.parameters():
        p.requires_grad_(False)  # what FINETUNE.MODE head does to the backbone
    with pytest.raises(GradNormError, match="frozen"):
        gradnorm(model, 3)


def test_on_the_c2t_lite_model_in_partial_mode():
    """The real model: W = the fusion LayerNorms, which partial fine-tuning keeps trainable."""
    from configs.default import get_cfg_defaults
    from models import build_model

    cfg = get_cfg_defaults()
    cfg.MODEL.NAME, cfg.MODEL.BACKBONE, cfg.MODEL.VIT = "c2t_lite", "efficientnet_lite0", "vit_tiny_patch16_224"
    cfg.MODEL.FUSION_DIM, cfg.MODEL.FUSION_HEADS, cfg.MODEL.TA_BLOCKS = 64, 4, False
    cfg.DATASET.HEIGHT, cfg.DATASET.WIDTH = 64, 32
    cfg.FINETUNE.MODE = "partial"
    cfg.LOSS.TYPE = "gradnormloss"
    torch.manual_seed(0)
    model = build_model(cfg, 4)
    crit = build_loss(cfg, ["a", "b", "c", "d"], [], None, model)
    x, y = torch.rand(4, 3, 64, 32), torch.tensor([[1, 0, 1, 0], [0, 1, 1, -1], [1, 1, 0, 0], [0, 0, 0, 1]]).float()
    loss, parts = crit(model(x), y)
    loss.backward()
    w = crit.terms[0].weights.detach()
    assert not torch.equal(w, torch.ones(4)) and w.sum().item() == pytest.approx(4.0, abs=1e-5)
    assert all(p.grad is not None for p in model.shared_params())  # the model's own backward reached W
    cfg.FINETUNE.MODE = "head"
    with pytest.raises(GradNormError, match="frozen"):
        build_loss(cfg, ["a", "b", "c", "d"], [], None, build_model(cfg, 4))


def test_an_overflowing_batch_leaves_the_weights_finite_and_training_continues_with_skip():
    """One batch whose logits overflow to inf: ON_NONFINITE skip drops that step, GradNorm does not let
    the inf/NaN reach its weights or Adam moments, and the next batches keep moving the weights."""
    from tools.engine.loop import StepOptions, train_one_epoch

    torch.manual_seed(0)
    model = LinearShared(4, 6, 3)
    crit = gradnorm(model, 3, lr=0.05)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    good = [(torch.randn(8, 4), (torch.rand(8, 3) > 0.5).float(), torch.arange(8)) for _ in range(5)]
    bad = (torch.full((8, 4), 3e38), good[0][1], torch.arange(8))  # W x overflows float32 -> inf loss
    loader = [good[0], good[1], bad, good[2], good[3], good[4]]
    term = crit.terms[0]
    weights_seen = []
    res = train_one_epoch(model, loader, crit, opt, opt=StepOptions(device=torch.device("cpu"), on_nonfinite="skip"),
                          progress=False, on_step=lambda s: weights_seen.append(term.weights.detach().clone()))
    assert res.skipped_steps == 1 and res.steps == 5
    assert term.skipped_updates == 1
    w = term.weights.detach()
    assert bool(torch.isfinite(w).all()) and w.sum().item() == pytest.approx(3.0, abs=1e-5)
    assert all(bool(torch.isfinite(v).all()) for st in term.optimizer.state.values() for v in st.values()
               if torch.is_tensor(v))
    assert not torch.equal(weights_seen[1], weights_seen[-1])  # after the bad batch the weights still move
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())
