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
    flip = (torch.rand(total, generator=gen) < 0.5)[start:start + b]
    shift = (torch.randint(0, 2 * pad + 1, (total, 2), generator=gen) - pad)[start:start + b]
    if x.device.type == "cpu":
        return _flip_shift_copies(x, flip, shift)
    return _flip_shift_gather(x, flip.to(x.device, non_blocking=True), shift.to(x.device, non_blocking=True))


def _flip_shift_copies(x: torch.Tensor, flip: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """CPU: one slice copy per sample, memcpy-like (several times cheaper than a gather there)."""
    _, _, h, w = x.shape
    out = torch.zeros_like(x)
    for i, (f, (dy, dx)) in enumerate(zip(flip.tolist(), shift.tolist())):
        # out[:, r, c] = src[:, r + dy, c + dx] where that lies inside the image, else 0
        r0, r1, c0, c1 = max(0, -dy), min(h, h - dy), max(0, -dx), min(w, w - dx)
        if r0 < r1 and c0 < c1:
            src = x[i].flip(-1) if f else x[i]
            out[i, :, r0:r1, c0:c1] = src[:, r0 + dy:r1 + dy, c0 + dx:c1 + dx]
    return out


def _flip_shift_gather(x: torch.Tensor, flip: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """GPU: the same result as one gather over the batch (a few kernels instead of one per sample)."""
    b, c, h, w = x.shape
    rows = torch.arange(h, device=x.device) + shift[:, 0:1]  # (B, H) source row
    cols = torch.arange(w, device=x.device) + shift[:, 1:2]  # (B, W) source column in the flipped image
    valid = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
    cols = torch.where(flip[:, None], w - 1 - cols, cols)  # ... in the original image
    idx = rows.clamp(0, h - 1)[:, :, None] * w + cols.clamp(0, w - 1)[:, None, :]  # (B, H, W)
    out = x.reshape(b, c, h * w).gather(2, idx.view(b, 1, h * w).expand(b, c, h * w)).view(b, c, h, w)
    return torch.where(valid[:, None], out, torch.zeros((), dtype=x.dtype, device=x.device))
