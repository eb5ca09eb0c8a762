"""The per-attribute feature split of label-balanced learning (ICML 2024, MODEL.HEAD split).

    pooled (B, C) -> Linear(C, N*C) + BatchNorm1d(N*C) -> N attribute features z_j  (B, N, C)
    logit_j = w_j . ReLU(z_j) + b_j                                                    (B, N)

The N per-attribute classifiers are one (N, C) weight and one (N,) bias (an einsum, not N modules),
so stage 2 (TRAIN.STAGE2) can run stage-1 heads, new heads or re-sampled features through them.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class AttrClassifier(nn.Module):
    """N independent ``Linear(C, 1)`` on ``ReLU(z_j)``: (B, N, C) attribute features -> (B, N) logits."""

    def __init__(self, num_attrs: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_attrs, dim))
        self.bias = nn.Parameter(torch.empty(num_attrs))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``nn.Linear(C, 1)``'s initialisation for every attribute: U(-1/sqrt(C), 1/sqrt(C))."""
        bound = 1.0 / math.sqrt(self.weight.shape[1])
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bnc,nc->bn", F.relu(z), self.weight.to(z.dtype)) + self.bias.to(z.dtype)


class SplitHead(nn.Module):
    """``split`` (Linear + BatchNorm1d, part of the extractor) then ``classifier`` (the per-attribute heads)."""

    def __init__(self, in_dim: int, num_attrs: int):
        super().__init__()
        self.num_attrs, self.dim = num_attrs, in_dim
        self.split = nn.Sequential(nn.Linear(in_dim, num_attrs * in_dim), nn.BatchNorm1d(num_attrs * in_dim))
        self.classifier = AttrClassifier(num_attrs, in_dim)

    def attr_features(self, feat: torch.Tensor) -> torch.Tensor:
        """(B, C) pooled feature -> (B, N, C) attribute features (before the ReLU)."""
        return self.split(feat).reshape(-1, self.num_attrs, self.dim)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.attr_features(feat))
