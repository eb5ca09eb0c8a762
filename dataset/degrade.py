"""Synthetic low-quality augmentation (``TRAIN.DATAAUG.LOW_QUALITY p``): CCTV-like crops from clean ones.

With probability ``p`` an image is downscaled by a random side factor and scaled back (lost detail),
then, each with probability 1/2, blurred, JPEG-compressed and given sensor noise. The parameters of
every sample are drawn from the batch's seeded generator in a fixed number of draws (as in
``dataset.augment``), so a resumed run and N DDP ranks draw exactly what one process does (the pixels
are bit-identical on the same device type). It runs after random erasing: an erased patch is degraded too,
as an occluder in a CCTV frame would be.
"""
from __future__ import annotations

import math

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms.functional import gaussian_blur

SCALE = (0.25, 0.75)  # side factor of the downscale (a 256x128 crop becomes 64x32 ... 192x96)
STAGE_P = 0.5  # each of blur, JPEG, noise
BLUR_SIGMA = (0.5, 1.5)  # px
JPEG_QUALITY = (15, 60)
NOISE_STD = (2.0, 10.0)  # on the 0-255 scale
N_DRAWS = 8  # uniform draws per sample: on, scale, blur on / sigma, jpeg on / quality, noise on / std


def _lerp(lo_hi: tuple[float, float], u: float) -> float:
    return lo_hi[0] + (lo_hi[1] - lo_hi[0]) * u


def _jpeg(img: torch.Tensor, quality: int) -> torch.Tensor:
    """(1, 3, H, W) float on the 0-255 scale through an OpenCV JPEG round trip (on the CPU)."""
    bgr = img[0].flip(0).permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).cpu().numpy()  # OpenCV's order
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(bgr), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # never seen; the image is then left uncompressed rather than failing the step
        return img
    out = torch.from_numpy(cv2.imdecode(buf, cv2.IMREAD_UNCHANGED).reshape(bgr.shape)[..., ::-1].copy())
    return out.permute(2, 0, 1)[None].to(img.device, torch.float32)


def _degrade_one(img: torch.Tensor, u: list[float], noise_seed: int) -> torch.Tensor:
    """One (1, 3, H, W) image on the 0-255 scale, float32."""
    h, w = img.shape[-2:]
    s = _lerp(SCALE, u[1])
    small = F.interpolate(img, size=(max(1, round(h * s)), max(1, round(w * s))), mode="bilinear",
                          antialias=True, align_corners=False)
    img = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
    if u[2] < STAGE_P:
        sigma = _lerp(BLUR_SIGMA, u[3])
        img = gaussian_blur(img, [2 * math.ceil(3 * sigma) + 1] * 2, [sigma, sigma])
    if u[4] < STAGE_P:
        img = _jpeg(img, round(_lerp(JPEG_QUALITY, u[5])))
    if u[6] < STAGE_P:
        g = torch.Generator().manual_seed(noise_seed)
        img = img + torch.randn(img.shape, generator=g).to(img.device) * _lerp(NOISE_STD, u[7])
    return img.clamp(0, 255)


def low_quality(x: torch.Tensor, gen: torch.Generator, prob: float, *, total: int | None = None,
                start: int = 0) -> torch.Tensor:
    """(B, 3, H, W) uint8 (0-255) or float (0-1) images, degraded with probability ``prob`` each (module
    note); parameters drawn for ``total`` samples and ``start:start+B`` used, as in ``augment_batch``."""
    b = x.shape[0]
    total = b if total is None else total
    u = torch.rand(total, N_DRAWS, generator=gen)[start:start + b]
    seeds = torch.randint(0, 2**31 - 1, (total,), generator=gen)[start:start + b]
    unit = 1.0 if x.dtype == torch.uint8 else 255.0
    out = x.clone()
    for i in np.flatnonzero((u[:, 0] < prob).numpy()):
        img = _degrade_one(x[i:i + 1].float() * unit, u[i].tolist(), int(seeds[i]))
        out[i] = img[0].round().to(x.dtype) if x.dtype == torch.uint8 else (img[0] / unit).to(x.dtype)
    return out
