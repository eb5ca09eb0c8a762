"""Softmax cross-entropy over each exclusive attribute group, BCE for everything else.

For a sample whose exclusive group is fully annotated with exactly one positive, the group costs
one softmax cross-entropy over the group's logits (booked on the positive attribute's column, so
per-attribute sums, and GradNorm-style views, stay meaningful). A sample whose group is empty
(all 0), multi-hot or partly unknown is not a valid categorical target: by default
(``FALLBACK: bce``) its group attributes fall back to per-attribute BCE (unknown labels still
masked), so no annotation is thrown away; with ``FALLBACK: mask`` they contribute nothing.
Attributes outside exclusive groups (and 'optional' groups such as glasses/sunglasses, which
may both be 0) always use BCE.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from losses.bce import BCETerm
from losses.common import per_attribute


class CategoricalTerm(nn.Module):
    def __init__(self, group_indices: list[list[int]], fallback: str = "bce", label_smooth: float = 0.0,
                 sample_weight: bool = False):
        super().__init__()
        if not group_indices:
            raise ValueError("the categorical loss needs at least one 'exclusive' attribute group "
                             "(DATASET.GROUPS or the dataset's own groups); use bce otherwise")
        for idx in group_indices:
            if len(idx) < 2:
                raise ValueError(f"an exclusive group needs at least 2 attributes, got indices {idx}")
        self.group_indices = [list(map(int, idx)) for idx in group_indices]
        for i, idx in enumerate(self.group_indices):  # index tensors follow the module's device
            self.register_buffer(f"group_{i}", torch.tensor(idx, dtype=torch.long), persistent=False)
        self.fallback = fallback
        self.label_smooth = label_smooth
        self.bce = BCETerm(label_smooth, sample_weight)  # outside groups and the fallback

    def elementwise(self, z: torch.Tensor, y: torch.Tensor, known: torch.Tensor,
                    priors: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (element losses, mask) with the group columns rewritten."""
        elem = self.bce.elementwise(z, y, priors)
        mask = known
        zero = torch.zeros((), dtype=elem.dtype, device=elem.device)
        for i in range(len(self.group_indices)):
            cols = getattr(self, f"group_{i}").to(z.device)
            zg, yg, kg = z[:, cols], y[:, cols], known[:, cols]
            valid = kg.all(1) & (yg.sum(1) == 1)  # exactly one positive, nothing unknown
            ce = F.cross_entropy(zg, yg.argmax(1), reduction="none", label_smoothing=self.label_smooth)
            block = torch.where(valid[:, None], yg * ce[:, None], elem[:, cols])
            keep = kg if self.fallback == "bce" else kg & valid[:, None]
            block = torch.where(keep, block, zero)
            elem = elem.index_copy(1, cols, block)
            mask = mask.index_copy(1, cols, keep)
        return elem, mask

    def forward(self, z: torch.Tensor, y: torch.Tensor, known: torch.Tensor, priors: torch.Tensor | None,
                sizesum: bool) -> torch.Tensor:
        elem, mask = self.elementwise(z, y, known, priors)
        return per_attribute(elem, mask, sizesum)
