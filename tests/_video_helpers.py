"""Shared fixtures of the video / inference / ONNX tests: a tiny real checkpoint, a synthetic video
with a matching MOT detection file, and a fake predictor whose output depends on the crop colour."""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import cv2
import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ATTRS = ["c_red", "c_green", "c_blue", "Glasses", "Sunglasses", "Gender_female", "Hat", "Backpack"]
GROUPS = [["colour", "exclusive", "c_red", "c_green", "c_blue"], ["eyewear", "optional", "Glasses", "Sunglasses"]]

# Two rectangles that never overlap: red moves right along the top, blue moves left below it.
N_FRAMES, FRAME_W, FRAME_H, BOX_W, BOX_H = 30, 320, 240, 40, 100
OBJECTS = {"red": ((0, 0, 255), 20, 4, 20), "blue": ((255, 0, 0), 260, -4, 125)}  # BGR, x0, dx, y


def gt_box(obj: str, t: int) -> tuple[int, int, int, int]:
    """x, y, w, h of ``obj`` on 0-based frame ``t``."""
    _, x0, dx, y = OBJECTS[obj]
    return x0 + dx * t, y, BOX_W, BOX_H


def make_video(folder: Path, name: str = "clip.mp4", n_frames: int = N_FRAMES,
               people: bool = True) -> tuple[Path, Path]:
    """Write ``name`` (mp4v) and ``<stem>.txt`` (MOT: frame,id,x,y,w,h,score,-1,-1,-1; ids 7 and 9)."""
    folder.mkdir(parents=True, exist_ok=True)
    video, det = folder / name, folder / f"{Path(name).stem}.txt"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (FRAME_W, FRAME_H))
    lines = []
    for t in range(n_frames):
        img = np.full((FRAME_H, FRAME_W, 3), 30, np.uint8)
        if people:
            for mot_id, (obj, (bgr, *_)) in zip((7, 9), OBJECTS.items()):
                x, y, w, h = gt_box(obj, t)
                img[y:y + h, x:x + w] = bgr
                lines.append(f"{t + 1},{mot_id},{x},{y},{w},{h},0.9,-1,-1,-1")
        writer.write(img)
    writer.release()
    det.write_text("\n".join(lines) + ("\n" if lines else ""))
    return video, det


class FakePredictor:
    """Probabilities from the crop's mean colour; ``Hat`` and ``Backpack`` alternate between calls
    (the average decides, a single frame would flicker)."""

    attr_names = ATTRS
    groups = GROUPS
    # red crop: female, no eyewear, Hat 0.9/0.3 (mean 0.6: on)
    # blue crop: male, Sunglasses, Backpack 0.2/0.6 (mean 0.4: off)
    RED = {"Glasses": 0.2, "Sunglasses": 0.3, "Gender_female": 0.8, "Hat": (0.9, 0.3), "Backpack": 0.1}
    BLUE = {"Glasses": 0.1, "Sunglasses": 0.7, "Gender_female": 0.2, "Hat": 0.1, "Backpack": (0.2, 0.6)}

    def __init__(self) -> None:
        self.calls = 0
        self.crop_sizes: list[tuple[int, int]] = []

    def predict_images(self, images: list[np.ndarray]) -> np.ndarray:
        out = np.zeros((len(images), len(ATTRS)), np.float32)
        for i, im in enumerate(images):
            assert im.dtype == np.uint8 and im.ndim == 3 and im.shape[2] == 3
            self.crop_sizes.append(im.shape[:2])
            rgb = im.reshape(-1, 3).mean(0)
            out[i, :3] = rgb / max(rgb.sum(), 1e-6)
            spec = self.RED if rgb[0] > rgb[2] else self.BLUE
            for name, v in spec.items():
                out[i, ATTRS.index(name)] = v[self.calls % 2] if isinstance(v, tuple) else v
        self.calls += 1
        return out


class FakeEmbedder(FakePredictor):
    """FakePredictor with an appearance embedding: the crop's mean RGB (not unit length)."""

    has_embeddings = True

    def embed_images(self, images: list[np.ndarray]) -> np.ndarray:
        return np.stack([im.reshape(-1, 3).mean(0) for im in images]).astype(np.float32)

    def predict_with_embeddings(self, images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        return self.predict_images(images), self.embed_images(images)


def tiny_cfg(height: int = 64, width: int = 32, model: str = "timm"):
    """Config of a tiny random-init model (no weights anywhere): timm's test_resnet, or a c2t preset
    (e.g. ``c2t_lite``) with its own branches."""
    from configs.default import get_cfg_defaults

    cfg = get_cfg_defaults()
    cfg.MODEL.NAME = model
    if model == "timm":
        cfg.MODEL.BACKBONE = "test_resnet"
    cfg.MODEL.DROP_PATH = 0.0
    cfg.DATASET.HEIGHT, cfg.DATASET.WIDTH = height, width
    cfg.DATASET.ATTRS = list(ATTRS)
    cfg.DATASET.GROUPS = [list(g) for g in GROUPS]
    cfg.DEVICE = "cpu"
    return cfg


def make_checkpoint(path: Path, seed: int = 0, model: str = "timm") -> Path:
    """A checkpoint in the trainer's format (model, attr_names, groups, cfg text, epoch, best_metric)."""
    import torch

    from models.build import build_model
    from tools.checkpoint import save_checkpoint

    cfg = tiny_cfg(model=model)
    torch.manual_seed(seed)
    model = build_model(cfg, len(ATTRS))
    with torch.no_grad():  # non-trivial BatchNorm statistics so eval mode matters
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return save_checkpoint({"model": model.state_dict(), "attr_names": list(ATTRS),
                            "groups": [list(g) for g in GROUPS], "cfg": cfg.dump(), "epoch": 3,
                            "best_metric": 0.5}, path)


def load_script():
    """The video application module (``cctv.app``) that ``test_video.py`` and ``run.py --mode video`` call."""
    import cctv.app

    return cctv.app
