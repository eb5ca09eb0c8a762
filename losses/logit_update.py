"""The seed study's logit update ("myloss"): recall-ratio scaling of the training logits.

After every validation the per-attribute positive recall R+_j and negative recall R-_j are
stored. During the following epoch the loss sees, for every known label,

    z'_bj = z_bj * R-_j / R+_j   if y_bj = 1
    z'_bj = z_bj * R+_j / R-_j   if y_bj = 0

A recall that is 0 or undefined (NaN: no positive / negative label in the validation split) is
replaced by 1 first, so nothing divides by zero; before the first validation both are 1 (plain
loss). The ratios are constants (no gradient). Prediction always uses the raw logits.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn


def safe_recall(r: torch.Tensor) -> torch.Tensor:
    return torch.where(torch.isfinite(r) & (r > 0), r, torch.ones_like(r))


class LogitUpdate(nn.Module):
    def __init__(self, num_attrs: int):
        super().__init__()
        self.num_attrs = num_attrs
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
        rp, rn = safe_recall(self.pos_recall), safe_recall(self.neg_recall)
        return rn / rp, rp / rn

    def forward(self, z: torch.Tensor, y: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
        pos_scale, neg_scale = self.ratios()
        scale = torch.where(y > 0.5, pos_scale.to(z), neg_scale.to(z))
        return z * torch.where(known, scale, torch.ones_like(scale))
