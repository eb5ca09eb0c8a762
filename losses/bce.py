"""Binary cross-entropy per attribute, with optional label smoothing, sample weighting and a
logit scale (Rethinking_of_PAR's ScaledBCELoss uses scale 30)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from losses.common import ElementwiseTerm, sample_weights, smooth_labels


class BCETerm(ElementwiseTerm):
    def __init__(self, label_smooth: float = 0.0, sample_weight: bool = False, scale: float = 1.0):
        super().__init__()
        self.label_smooth = label_smooth
        self.sample_weight = sample_weight
        self.scale = scale

    def elementwise(self, z: torch.Tensor, y: torch.Tensor, priors: torch.Tensor | None) -> torch.Tensor:
        zs = z * self.scale if self.scale != 1.0 else z
        loss = F.binary_cross_entropy_with_logits(zs, smooth_labels(y, self.label_smooth), reduction="none")
        if self.sample_weight:
            loss = loss * sample_weights(y, priors)
        return loss
