"""The seed study's logit update ("myloss"): recall-ratio scaling of the training logits.

After every validation the per-attribute positive recall R+_j and negative recall R-_j are
stored. During the following epoch the loss sees, for every known label,

    z'_bj = z_bj * R-_j / R+_j   if y_bj = 1
    z'_bj = z_bj * R+_j / R-_j   if y_bj = 0

An undefined recall (NaN: no positive / negative label in the validation split) is replaced by
1 (no information, no correction). A recall below ``floor`` (LOSS.LOGIT_UPDATE_FLOOR, default
0.1) counts as ``floor``: nothing divides by zero, and an attribute that is never predicted
positive (R+ = 0, the case the update exists for) gets the strongest correction, R-/floor,
instead of none. Before the first validation both are 1 (plain loss). The ratios are constants
(no gradient). Prediction always uses the raw logits.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn


def safe_recall(r: torch.Tensor, floor: float) -> torch.Tensor:
    """NaN (undefined) -> 1; anything below ``floor`` -> ``floor``."""
    return torch.where(torch.isfinite(r), r.clamp(min=floor), torch.ones_like(r))


class LogitUpdate(nn.Module):
    def __init__(self, num_attrs: int, floor: float = 0.1):
        super().__init__()
        if not 0 < floor <= 1:
            raise ValueError(f"LOSS.LOGIT_UPDATE_FLOOR must be in (0, 1], got {floor}")
        self.num_attrs = num_attrs
        self.floor = float(floor)
        # persistent buffers: they travel in the checkpoint so a resumed run continues identically
        self.register_buffer("pos_recall", torch.ones(num_attrs))
        self.register_buffer("neg_recall", torch.ones(num_attrs))

    def store(self, pos_recall: np.ndarray, neg_recall: np.ndarray) -> None:
        pos = torch.as_tensor(np.asarray(pos_recall, dtype=np.float32)).reshape(-1)
        neg = torch.as_tensor(np.asarray(neg_recall, dtype=np.float32)).reshape(-1)
        if pos.numel() != self.num_attrs or neg.numel() != self.num_attrs:
            raise ValueError(f"on_validation_end needs {self.num_attrs} positive and negative recalls "
                             f"(one per attribute), got {pos.numel()} and {neg.numel()}")
        self.pos_recall.copy_(pos)
        self.neg_recall.copy_(neg)

    def ratios(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale for positive labels, scale for negative labels), each (A,)."""
        rp, rn = safe_recall(self.pos_recall, self.floor), safe_recall(self.neg_recall, self.floor)
        return rn / rp, rp / rn

    def forward(self, z: torch.Tensor, y: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
        pos_scale, neg_scale = self.ratios()
        scale = torch.where(y > 0.5, pos_scale.to(z), neg_scale.to(z))
        return z * torch.where(known, scale, torch.ones_like(scale))
