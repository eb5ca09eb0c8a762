"""The one image preprocessing of the framework: decode a file, resize an RGB array.

Training, evaluation, ``--mode predict``, video crops and the Python predictor all go through
``resize_rgb`` (and files through ``decode_rgb``), so a checkpoint sees the same pixels wherever
it runs. Resizing is PIL's bilinear filter, which antialiases when it shrinks (``RESIZE``); files
are decoded at full size (no JPEG ``draft()`` scaling, which an in-memory crop cannot reproduce).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

RESIZE = "pil_bilinear"  # the name stored in a checkpoint's inference contract
CHANNELS = "RGB"


class BadImage(Exception):
    """An image that cannot be used; ``str()`` says why in a few words."""


def as_rgb_array(image: np.ndarray) -> np.ndarray:
    """An (H, W, 3) uint8 RGB array from a gray (H, W), RGB or RGBA uint8 array (alpha dropped)."""
    img = np.asarray(image)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    elif img.ndim == 3 and img.shape[2] == 4:
        img = img[:, :, :3]
    if img.ndim != 3 or img.shape[2] != 3 or img.shape[0] == 0 or img.shape[1] == 0:
        raise ValueError(f"expected an RGB image (H, W, 3), got an array of shape {img.shape}")
    if img.dtype != np.uint8:
        raise ValueError(f"expected uint8 RGB pixels, got {img.dtype}; convert with (x * 255).astype(np.uint8)")
    return img


def resize_rgb(image: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (size_hw[0], size_hw[1], 3) uint8, PIL bilinear (antialiased)."""
    img = as_rgb_array(image)
    if img.shape[:2] == tuple(size_hw):
        return np.ascontiguousarray(img)
    out = Image.fromarray(np.ascontiguousarray(img), "RGB").resize((size_hw[1], size_hw[0]), Image.BILINEAR)
    return np.asarray(out, dtype=np.uint8)


def decode_rgb(path: Path, max_pixels: int = 50_000_000) -> np.ndarray:
    """Decode a file to (H, W, 3) uint8 RGB. Grayscale, CMYK, palette and RGBA inputs are converted
    (alpha dropped). Raises BadImage for missing, empty, truncated, non-image or oversized files."""
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise BadImage("zero-byte file")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise BadImage(f"{w}x{h} pixels is over DATASET.MAX_IMAGE_PIXELS={max_pixels}")
                return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError:
        raise BadImage("file not found") from None
    except UnidentifiedImageError:
        raise BadImage("not an image file") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise BadImage(f"unreadable ({str(e).splitlines()[0][:80]})") from None


def load_image(path: Path, size_hw: tuple[int, int], max_pixels: int) -> np.ndarray:
    """``decode_rgb`` then ``resize_rgb``: the model input of one image file, (H, W, 3) uint8 RGB."""
    return resize_rgb(decode_rgb(path, max_pixels), size_hw)


def to_model_input(batch: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) uint8 -> float32 in [0, 1], the model's input (the model normalises itself)."""
    return torch.div(batch, 255.0)
