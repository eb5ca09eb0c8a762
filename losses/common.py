"""Pieces shared by the terms: masking, reduction, label smoothing, DeepMAR sample weights.

Every term maps float32 logits ``z`` (B, A), hard labels ``y`` (B, A; 1/0, unknown stored as 0)
and the ``known`` mask to a per-attribute loss vector (A,) whose sum is the term's loss. The
stack's reduction is applied here once, so all terms share it:

* ``sizesum=True``: sum over attributes, mean over the batch -> L_j = sum_b l_bj / B
* ``sizesum=False``: mean over every known label       -> L_j = sum_b l_bj / #known
"""
from __future__ import annotations

import torch

PRIOR_EPS = 1e-4  # priors are clipped to [eps, 1-eps] so log-odds stay finite for never-seen labels


def per_attribute(elem: torch.Tensor, mask: torch.Tensor, sizesum: bool) -> torch.Tensor:
    """(B, A) element losses, (B, A) bool mask -> (A,) reduced losses. Masked entries are
    replaced (not multiplied) by 0 so an inf/NaN there can never leak into the sum."""
    summed = torch.where(mask, elem, torch.zeros((), dtype=elem.dtype, device=elem.device)).sum(0)
    denom = max(elem.shape[0], 1) if sizesum else mask.sum().clamp(min=1).to(elem.dtype)
    return summed / denom


def smooth_labels(y: torch.Tensor, eps: float) -> torch.Tensor:
    """Symmetric binary label smoothing: 1 -> 1 - eps/2, 0 -> eps/2."""
    return y * (1.0 - eps) + 0.5 * eps if eps else y


def sample_weights(y: torch.Tensor, priors: torch.Tensor) -> torch.Tensor:
    """DeepMAR / Rethinking_of_PAR weighting from the train positive rate r_j:
    a positive label weighs exp(1 - r_j), a negative one exp(r_j)."""
    r = priors.to(y.dtype)
    return torch.where(y > 0.5, torch.exp(1.0 - r), torch.exp(r))


def log_odds(priors: torch.Tensor) -> torch.Tensor:
    """log(pi / (1 - pi)) per attribute, with pi clipped away from 0 and 1."""
    p = priors.clamp(PRIOR_EPS, 1.0 - PRIOR_EPS)
    return torch.log(p) - torch.log1p(-p)


class ElementwiseTerm(torch.nn.Module):
    """A loss term defined per label (``elementwise``), reduced per attribute over known labels."""

    def elementwise(self, z: torch.Tensor, y: torch.Tensor, priors: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, z: torch.Tensor, y: torch.Tensor, known: torch.Tensor, priors: torch.Tensor | None,
                sizesum: bool) -> torch.Tensor:
        return per_attribute(self.elementwise(z, y, priors), known, sizesum)
