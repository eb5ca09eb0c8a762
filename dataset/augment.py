"""Training augmentation on batched tensors (on the training device): flip + pad-and-crop, random erasing,
synthetic low quality (``dataset.degrade``).

Randomness comes from an explicit generator seeded by (seed, epoch, step), so an interrupted
run that resumes mid-epoch draws exactly the same augmentations. Under DDP every rank draws
for the whole global batch and keeps its own slice, so N ranks augment exactly like one process.
"""
from __future__ import annotations

import math

import torch

from dataset.degrade import low_quality as low_quality_batch

PAD = 8  # pixels of translation each way (at 256x128 the seed used a 10 px pad)


def augment_batch(x: torch.Tensor, gen: torch.Generator, pad: int = PAD, total: int | None = None,
                  start: int = 0, *, erase: float = 0.0, low_quality: float = 0.0) -> torch.Tensor:
    """``x``: (B, C, H, W), any dtype (uint8 is cheapest). Random horizontal flip, then a random
    translation by up to ``pad`` pixels with zero fill (= zero-pad by ``pad`` and crop H x W), then
    (``erase`` > 0) random erasing with that probability per image (see ``random_erase``), then
    (``low_quality`` > 0) the synthetic low-quality degradation of ``dataset.degrade``.

    Parameters are drawn for ``total`` samples (default B) and samples ``start:start+B`` are used.
    """
    b, _, h, w = x.shape
    total = b if total is None else total
    if not 0 <= start <= total - b:
        raise ValueError(f"augment_batch: rows {start}:{start + b} are outside the drawn batch of {total}")
    flip = (torch.rand(total, generator=gen) < 0.5)[start:start + b]
    shift = (torch.randint(0, 2 * pad + 1, (total, 2), generator=gen) - pad)[start:start + b]
    if x.device.type == "cpu":
        out = _flip_shift_copies(x, flip, shift)
    else:
        out = _flip_shift_gather(x, flip.to(x.device, non_blocking=True), shift.to(x.device, non_blocking=True))
    # drawn after flip / shift (and erasing): a 0 leaves the earlier draws, and so every earlier run, unchanged
    out = random_erase(out, gen, erase, total=total, start=start) if erase > 0 else out
    return low_quality_batch(out, gen, low_quality, total=total, start=start) if low_quality > 0 else out


ERASE_AREA = (0.02, 0.4)  # share of the image area (Zhong et al. 2020, torchreid / fast-reid defaults)
ERASE_ASPECT = (0.3, 1 / 0.3)  # height / width of the rectangle, drawn log-uniform
ERASE_TRIES = 10  # rectangles drawn per image; the first that fits is used (none fits: not erased)
FILL_RGB = (0.485, 0.456, 0.406)  # the ImageNet mean: an erased patch is 'average', not black


def random_erase(x: torch.Tensor, gen: torch.Generator, prob: float, *, total: int | None = None,
                 start: int = 0) -> torch.Tensor:
    """Random erasing on (B, 3, H, W) images: with probability ``prob`` one rectangle per image is
    set to the ImageNet mean (x 255 for uint8). One mask over the batch, on any device; parameters
    drawn for ``total`` samples and ``start:start+B`` used, as in ``augment_batch``."""
    b, _, h, w = x.shape
    total = b if total is None else total
    on = torch.rand(total, generator=gen) < prob
    area = torch.empty(total, ERASE_TRIES).uniform_(*ERASE_AREA, generator=gen) * (h * w)
    lo, hi = math.log(ERASE_ASPECT[0]), math.log(ERASE_ASPECT[1])
    log_r = torch.empty(total, ERASE_TRIES).uniform_(lo, hi, generator=gen)
    eh, ew = (area * log_r.exp()).sqrt().round().long(), (area / log_r.exp()).sqrt().round().long()
    u = torch.rand(total, ERASE_TRIES, 2, generator=gen)
    fits = (eh >= 1) & (ew >= 1) & (eh < h) & (ew < w)
    pick = fits.float().argmax(1, keepdim=True)  # first rectangle that fits
    on = on & fits.any(1)
    eh, ew = eh.gather(1, pick)[:, 0], ew.gather(1, pick)[:, 0]
    u = u.gather(1, pick[:, :, None].expand(-1, 1, 2))[:, 0]
    y0 = (u[:, 0] * (h - eh + 1).clamp_min(1)).long()
    x0 = (u[:, 1] * (w - ew + 1).clamp_min(1)).long()
    sl = slice(start, start + b)
    rows, cols = torch.arange(h), torch.arange(w)
    in_r = (rows[None] >= y0[sl, None]) & (rows[None] < (y0 + eh)[sl, None])  # (B, H)
    in_c = (cols[None] >= x0[sl, None]) & (cols[None] < (x0 + ew)[sl, None])  # (B, W)
    mask = (in_r[:, :, None] & in_c[:, None, :] & on[sl, None, None])[:, None].to(x.device, non_blocking=True)
    fill = torch.tensor(FILL_RGB, dtype=torch.float32)
    fill = (fill * 255).round().to(x.dtype) if x.dtype == torch.uint8 else fill.to(x.dtype)
    return torch.where(mask, fill.view(1, 3, 1, 1).to(x.device), x)


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
