"""Sigmoid focal loss per attribute (Lin et al. 2017):
FL = -alpha_t (1 - p_t)^gamma log p_t, p = sigmoid(z), p_t = p y + (1-p)(1-y),
alpha_t = alpha y + (1-alpha)(1-y). With gamma = 0 it is alpha_t-weighted BCE."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from losses.common import ElementwiseTerm, sample_weights


class FocalTerm(ElementwiseTerm):
    def __init__(self, alpha: float = 0.25, gamma: float = 2.0, sample_weight: bool = False):
        super().__init__()
        self.alpha = alpha
        self.gamma = gamma
        self.sample_weight = sample_weight

    def elementwise(self, z: torch.Tensor, y: torch.Tensor, priors: torch.Tensor | None) -> torch.Tensor:
        neg_log_pt = F.binary_cross_entropy_with_logits(z, y, reduction="none")  # -log p_t, stable
        # 1 - p_t = sigmoid(-z) for y = 1 and sigmoid(z) for y = 0: computed directly, not as 1 - exp(..)
        # (clamped so that gamma < 1 never meets 0^gamma, whose gradient is infinite)
        one_minus_pt = torch.sigmoid(-(2.0 * y - 1.0) * z).clamp(min=1e-12)
        alpha_t = self.alpha * y + (1.0 - self.alpha) * (1.0 - y)
        loss = alpha_t * one_minus_pt.pow(self.gamma) * neg_log_pt
        if self.sample_weight:
            loss = loss * sample_weights(y, priors)
        return loss
