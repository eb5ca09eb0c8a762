"""Training augmentation on batched tensors (on the training device): flip + pad-and-crop.

Randomness comes from an explicit generator seeded by (seed, epoch, step), so an interrupted
run that resumes mid-epoch draws exactly the same augmentations. Under DDP every rank draws
for the whole global batch and keeps its own slice, so N ranks augment exactly like one process.
"""
from __future__ import annotations

import torch

PAD = 8  # pixels of translation each way (at 256x128 the seed used a 10 px pad)


def augment_batch(x: torch.Tensor, gen: torch.Generator, pad: int = PAD, total: int | None = None,
                  start: int = 0) -> torch.Tensor:
    """``x``: (B, C, H, W), any dtype (uint8 is cheapest). Random horizontal flip, then a random
    translation by up to ``pad`` pixels with zero fill (= zero-pad by ``pad`` and crop H x W).

    Parameters are drawn for ``total`` samples (default B) and samples ``start:start+B`` are used.
    """
    b, _, h, w = x.shape
    total = b if total is None else total
    if not 0 <= start <= total - b:
        raise ValueError(f"augment_batch: rows {start}:{start + b} are outside the drawn batch of {total}")
    flip = (torch.rand(total, generator=gen) < 0.5)[start:start + b].tolist()
    shift = (torch.randint(0, 2 * pad + 1, (total, 2), generator=gen) - pad)[start:start + b].tolist()
    # A per-sample slice copy: no index tensors, a few memcpy-like copies (far cheaper than a gather on CPU).
    out = torch.zeros_like(x)
    for i, (f, (dy, dx)) in enumerate(zip(flip, shift)):
        src = x[i].flip(-1) if f else x[i]
        out[i, :, max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)] = \
            src[:, max(0, dy):h - max(0, -dy), max(0, dx):w - max(0, -dx)]
    return out
