"""Decode one image file to a resized RGB uint8 array, with bad files reported, not crashed on."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError


class BadImage(Exception):
    """An image that cannot be used; ``str()`` says why in a few words."""


def load_image(path: Path, size_hw: tuple[int, int], max_pixels: int) -> np.ndarray:
    """(H, W, 3) uint8 RGB resized to ``size_hw``. Grayscale, CMYK, palette and RGBA inputs are
    converted (alpha dropped onto black). Raises BadImage for missing, empty, truncated,
    non-image or oversized files."""
    try:
        if path.stat().st_size == 0:
            raise BadImage("zero-byte file")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise BadImage(f"{w}x{h} pixels is over DATASET.MAX_IMAGE_PIXELS={max_pixels}")
                im.draft("RGB", (size_hw[1] * 2, size_hw[0] * 2))  # JPEG: decode at reduced scale
                rgb = im.convert("RGB")
                rgb = rgb.resize((size_hw[1], size_hw[0]), Image.BILINEAR)
                return np.asarray(rgb, dtype=np.uint8)
    except FileNotFoundError:
        raise BadImage("file not found") from None
    except UnidentifiedImageError:
        raise BadImage("not an image file") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise BadImage(f"unreadable ({str(e).splitlines()[0][:80]})") from None
