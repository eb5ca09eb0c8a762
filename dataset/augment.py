"""Training augmentation on batched tensors (on the training device): flip + pad-and-crop.

Randomness comes from an explicit generator seeded by (seed, epoch, step), so an interrupted
run that resumes mid-epoch draws exactly the same augmentations.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

PAD = 8  # pixels of translation each way (at 256x128 the seed used a 10 px pad)


def augment_batch(x: torch.Tensor, gen: torch.Generator, pad: int = PAD) -> torch.Tensor:
    """``x``: (B, 3, H, W) float in [0, 1]. Random horizontal flip and random translation."""
    b, _, h, w = x.shape
    flip = torch.rand(b, generator=gen) < 0.5
    offs = torch.randint(0, 2 * pad + 1, (b, 2), generator=gen)
    x = torch.where(flip.to(x.device).view(b, 1, 1, 1), x.flip(3), x)
    padded = F.pad(x, (pad, pad, pad, pad))
    # One gather for the whole batch: build per-sample row/column indices of the crop window.
    rows = (offs[:, 0:1] + torch.arange(h)).to(x.device)  # (B, H)
    cols = (offs[:, 1:2] + torch.arange(w)).to(x.device)  # (B, W)
    idx_r = rows.view(b, 1, h, 1).expand(b, 3, h, w + 2 * pad)
    out = padded.gather(2, idx_r)
    idx_c = cols.view(b, 1, 1, w).expand(b, 3, h, w)
    return out.gather(3, idx_c)
