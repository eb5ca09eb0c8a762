"""SYNTH: a generated pedestrian-like dataset, so a fresh clone can train before it has data.

Each image is a crude figure drawn on a noisy background: its attributes (shirt and trouser
colour, hat, bag, long hair, short sleeves) are visible in the pixels, so a small network can
learn them. Images are written once as PNG files (keyed by size, count and seed) and reused.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
from PIL import Image
from yacs.config import CfgNode as CN

from dataset.base import PARData, groups_from_cfg
from dataset.registry import register_dataset

log = logging.getLogger(__name__)

COLOURS = {"red": (200, 40, 40), "green": (40, 170, 60), "blue": (40, 70, 200)}
SYNTH_ATTRS = ([f"U_{c}" for c in COLOURS] + [f"L_{c}" for c in COLOURS]
               + ["Hat", "Bag", "Hair_long", "Upper_short"])
SYNTH_GROUPS = [["upper_colour", "exclusive", *[f"U_{c}" for c in COLOURS]],
                ["lower_colour", "exclusive", *[f"L_{c}" for c in COLOURS]]]
_H, _W = 128, 64


def _draw(rng: np.random.Generator, y: np.ndarray, noise: float) -> np.ndarray:
    img = rng.normal(128, 40, size=(_H, _W, 3))  # cluttered background
    cols = list(COLOURS.values())
    upper, lower = cols[int(np.argmax(y[0:3]))], cols[int(np.argmax(y[3:6]))]
    hat, bag, long_hair, short_sleeve = y[6:10]
    dx = int(rng.integers(-6, 7))
    cx = _W // 2 + dx
    skin = (225, 190, 160)
    img[22:40, cx - 8:cx + 8] = skin  # head
    if long_hair:
        img[22:52, cx - 11:cx - 7] = (40, 25, 10)
        img[22:52, cx + 7:cx + 11] = (40, 25, 10)
    if hat:
        img[12:24, cx - 11:cx + 11] = (15, 15, 15)
    img[42:80, cx - 14:cx + 14] = upper  # torso
    arm = skin if short_sleeve else upper
    img[44:56, cx - 20:cx - 14] = upper
    img[44:56, cx + 14:cx + 20] = upper
    img[56:76, cx - 20:cx - 14] = arm
    img[56:76, cx + 14:cx + 20] = arm
    img[80:122, cx - 12:cx + 12] = lower  # legs
    if bag:
        img[60:84, cx + 20:cx + 30] = (120, 80, 20)
    img += rng.normal(0, 255 * noise, size=img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _labels(rng: np.random.Generator, n: int) -> np.ndarray:
    y = np.zeros((n, len(SYNTH_ATTRS)), np.float32)
    y[np.arange(n), rng.integers(0, 3, n)] = 1
    y[np.arange(n), 3 + rng.integers(0, 3, n)] = 1
    y[:, 6:10] = rng.random((n, 4)) < np.array([0.3, 0.4, 0.35, 0.5])
    return y


def generate(root: Path, n: int, seed: int, noise: float) -> np.ndarray:
    """Write ``n`` images + labels.json under ``root`` (idempotent); returns the labels."""
    meta = root / "labels.json"
    if meta.is_file():
        saved = json.loads(meta.read_text())
        if saved.get("n") == n and saved.get("seed") == seed and saved.get("noise") == noise:
            return np.asarray(saved["labels"], np.float32)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    y = _labels(rng, n)
    # temp name + rename: concurrent writers (DDP ranks) never expose a half-written file
    tag = f".{os.getpid()}.tmp"
    for i in range(n):
        tmp = root / f"{i:05d}.png{tag}"
        Image.fromarray(_draw(rng, y[i], noise)).save(tmp, format="PNG")
        os.replace(tmp, root / f"{i:05d}.png")
    tmp = meta.with_name(meta.name + tag)
    tmp.write_text(json.dumps({"n": n, "seed": seed, "noise": noise, "attrs": SYNTH_ATTRS,
                               "labels": y.astype(int).tolist()}))
    os.replace(tmp, meta)
    log.info("generated %d synthetic images in %s", n, root)
    return y


@register_dataset("SYNTH")
def read_synth(cfg: CN) -> PARData:
    d = cfg.DATASET
    n = d.SYNTH_SIZE
    root = Path(d.ROOT or f"data/SYNTH_{n}_{d.SPLIT_SEED}")
    y = generate(root, n, d.SPLIT_SEED, d.SYNTH_NOISE)
    idx = np.random.default_rng(d.SPLIT_SEED).permutation(n)
    n_train, n_val = int(n * d.TRAIN_NATIVE_SPLIT), int(n * d.VAL_NATIVE_SPLIT)
    splits = {"train": np.sort(idx[:n_train]), "val": np.sort(idx[n_train:n_train + n_val]),
              "test": np.sort(idx[n_train + n_val:])}
    splits["trainval"] = np.sort(np.concatenate([splits["train"], splits["val"]]))
    groups = groups_from_cfg(d.GROUPS) if d.GROUPS else groups_from_cfg(SYNTH_GROUPS)
    data = PARData("SYNTH", [root / f"{i:05d}.png" for i in range(n)], y, list(SYNTH_ATTRS), splits, groups,
                   root.resolve())
    return data.select_attrs(list(d.ATTRS)) if d.ATTRS else data
