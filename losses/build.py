from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class LossStack(nn.Module):
    def __init__(self, sizesum: bool = True):
        super().__init__()
        self.sizesum = sizesum

    def forward(self, logits, targets):
        mask = (targets >= 0).to(logits.dtype)
        loss = F.binary_cross_entropy_with_logits(logits, targets.clamp(min=0).to(logits.dtype), reduction="none") * mask
        loss = loss.sum(1).mean() if self.sizesum else loss.sum() / mask.sum().clamp(min=1)
        return loss, {"bce": loss.detach()}

    def on_validation_end(self, pos_recall: np.ndarray, neg_recall: np.ndarray) -> None:
        pass

    def adjust_logits(self, logits: torch.Tensor) -> torch.Tensor:
        return logits


def build_loss(cfg, attr_names, groups, priors, model=None) -> LossStack:
    return LossStack(cfg.LOSS.SIZESUM)
