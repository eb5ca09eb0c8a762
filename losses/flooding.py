"""GOAT's flooding loss (label-balanced learning, ICML 2024): per attribute and label a flood level b_j^y.

    L = (1/B) sum_i sum_j ( |l_ij - b_j^{y_ij}| + b_j^{y_ij} ),   l_ij = BCE(z_ij, y_ij)

Its gradient is d l_ij times sign(l_ij - b): descent where the loss is above its flood level, ascent
below it, so the extractor is pushed to keep each label's loss at the level stage 1 ended with.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from losses.common import per_attribute


def elementwise_bce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B, N) float32 BCE of hard 0/1 labels (unknown labels: mask them with ``known`` downstream)."""
    return F.binary_cross_entropy_with_logits(logits.float(), y.float(), reduction="none")


def flood_levels_of(levels: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(N, 2) levels [attribute, label] -> (B, N) b_j^{y_ij} of each label of the batch."""
    return torch.where(y > 0.5, levels[:, 1], levels[:, 0])


def flooding_loss(losses: torch.Tensor, levels: torch.Tensor, known: torch.Tensor,
                  sizesum: bool = True) -> torch.Tensor:
    """``losses`` (B, N) element losses, ``levels`` (B, N) their flood levels, ``known`` (B, N) mask -> scalar.
    Reduced like every loss term (``sizesum``: sum over attributes, mean over the batch)."""
    flooded = (losses - levels).abs() + levels
    return per_attribute(flooded, known, sizesum).sum()
