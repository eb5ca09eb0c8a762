"""LossStack: the weighted sum of loss terms, with the stack-wide logit transforms.

Training forward, in this order:
  1. logit update (LOSS.LOGIT_UPDATE): z * recall ratio, per label (see losses.logit_update)
  2. logit adjustment, train form (LOSS.LA_MODE train): + tau * log(pi / (1 - pi))
  3. every term maps the transformed logits to per-attribute losses; total = sum_k WEIGHT_k * sum_j L_kj
Prediction: ``adjust_logits`` applies the post-hoc logit adjustment (LA_MODE posthoc), else identity.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from losses.gradnorm import GradNormTerm
from losses.logit_adjust import posthoc_adjusted, train_adjusted
from losses.logit_update import LogitUpdate


class LossStack(nn.Module):
    """``loss, parts = stack(logits, targets)``; targets (B, A) with 1 / 0 / -1 (unknown, masked).

    ``parts`` holds detached scalars: each term's unweighted value under its name (and GradNorm's
    ``gradnorm_grad_loss``, ``gradnorm_w_min``, ``gradnorm_w_max``).
    """

    def __init__(self, terms: list[tuple[str, float, nn.Module]], num_attrs: int, priors: np.ndarray | None = None, *,
                 sizesum: bool = True, logit_update: bool = False, la_mode: str = "none", la_tau: float = 1.0,
                 update_floor: float = 0.1):
        super().__init__()
        if not terms:
            raise ValueError("a LossStack needs at least one term")
        if la_mode not in ("none", "train", "posthoc"):
            raise ValueError(f"la_mode = {la_mode!r} is not one of none | train | posthoc")
        names = [n for n, _, _ in terms]
        self.names = [n if names.count(n) == 1 else f"{n}_{i}" for i, n in enumerate(names)]
        self.weights = [float(w) for _, w, _ in terms]
        self.terms = nn.ModuleList([t for _, _, t in terms])
        self.num_attrs = num_attrs
        self.sizesum = sizesum
        self.use_logit_update = logit_update
        self.la_mode = la_mode
        self.la_tau = la_tau
        self.has_priors = priors is not None
        p = np.full(num_attrs, 0.5, np.float32) if priors is None else np.asarray(priors, np.float32).reshape(-1)
        if p.shape != (num_attrs,):
            raise ValueError(f"priors must hold one train positive rate per attribute ({num_attrs}), got shape {p.shape}")
        if not np.all(np.isfinite(p)) or p.min() < 0 or p.max() > 1:
            raise ValueError("priors must be positive rates in [0, 1] (from the train split)")
        # persistent: a checkpoint keeps the train priors its sample weights / logit adjustment used
        self.register_buffer("priors", torch.from_numpy(p.copy()))
        self.logit_update = LogitUpdate(num_attrs, update_floor)

    def _follow(self, device: torch.device) -> None:
        """Move the loss state to the logits' device once (the caller may never call .to())."""
        if self.priors.device != device:
            self.to(device)
            for t in self.terms:
                if isinstance(t, GradNormTerm):
                    t.move_optimizer_state(device)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if logits.shape != targets.shape or logits.dim() != 2 or logits.shape[1] != self.num_attrs:
            raise ValueError(f"loss expects logits and targets of shape (B, {self.num_attrs}), "
                             f"got {tuple(logits.shape)} and {tuple(targets.shape)}")
        self._follow(logits.device)
        z = logits.float()  # losses in float32 whatever the autocast dtype
        t = targets.to(device=z.device, dtype=z.dtype)
        known = t >= 0
        y = (t > 0.5).to(z.dtype)  # hard 1/0 labels; unknown stored as 0 and masked by `known`
        if self.use_logit_update:
            z = self.logit_update(z, y, known)
        if self.la_mode == "train":
            z = train_adjusted(z, self.priors, self.la_tau)
        total = z.new_zeros(())
        parts: dict[str, torch.Tensor] = {}
        for name, weight, term in zip(self.names, self.weights, self.terms):
            value = term(z, y, known, self.priors, self.sizesum).sum()
            total = total + weight * value
            parts[name] = value.detach()
            if isinstance(term, GradNormTerm):
                parts["gradnorm_grad_loss"] = term.last_grad_loss
                parts["gradnorm_w_min"] = term.weights.detach().min()
                parts["gradnorm_w_max"] = term.weights.detach().max()
        return total, parts

    def on_validation_end(self, pos_recall: np.ndarray, neg_recall: np.ndarray) -> None:
        """Store this validation's per-attribute recalls (used by the logit update next epoch)."""
        self.logit_update.store(pos_recall, neg_recall)

    def adjust_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits to predict with: post-hoc logit adjustment when LA_MODE is posthoc, else unchanged."""
        if self.la_mode == "posthoc":
            return posthoc_adjusted(logits, self.priors, self.la_tau)
        return logits

    def extra_repr(self) -> str:
        terms = " + ".join(f"{w:g}*{n}" for n, w in zip(self.names, self.weights))
        return (f"{terms}, sizesum={self.sizesum}, logit_update={self.use_logit_update}, "
                f"la_mode={self.la_mode}, la_tau={self.la_tau:g}")
