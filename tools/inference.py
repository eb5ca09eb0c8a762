"""Run a trained PAR checkpoint on person crops: ``Predictor.from_checkpoint(path).predict_images(crops)``.

Preprocessing is the whole contract: resize to (DATASET.HEIGHT, DATASET.WIDTH) with bilinear
interpolation, RGB in [0, 1]; the model normalises internally, so nothing else is needed here.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence, Union

import cv2
import numpy as np
import torch
import yaml
from yacs.config import CfgNode as CN

from configs.default import get_cfg_defaults
from dataset.base import AttrGroup, DataError
from tools.checkpoint import CheckpointError, load_checkpoint
from tools.device import select_device
from tools import results
from tools.labels import LabelDecoder, as_groups

log = logging.getLogger(__name__)

ImageLike = Union[np.ndarray, str, Path]
# Keys that must not follow the checkpoint's run: weights come from the checkpoint itself, and
# inference never needs the fine-tuning freeze.
_INFERENCE_OVERRIDES = {("MODEL", "PRETRAINED"): "none", ("MODEL", "VIT_PRETRAINED"): "none",
                        ("FINETUNE", "MODE"): "full"}


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """``auto``/None -> cuda when available, else cpu (``tools.device.select_device`` decides)."""
    return select_device("auto" if spec is None else str(spec))


def _merge_known(node: CN, data: dict, prefix: str = "") -> list[str]:
    """Merge ``data`` onto ``node``, keeping only keys the current schema knows (returns the rest)."""
    dropped = []
    for k, v in data.items():
        if k not in node:
            dropped.append(prefix + k)
        elif isinstance(node[k], CN):
            if isinstance(v, dict):
                dropped += _merge_known(node[k], v, f"{prefix}{k}.")
        else:
            node[k] = v
    return dropped


def cfg_from_checkpoint(ckpt: dict, path: str | Path = "checkpoint") -> CN:
    """The run's config stored in the checkpoint, on today's defaults (unknown old keys are ignored)."""
    text = ckpt.get("cfg")
    if not isinstance(text, str) or not text.strip():
        raise CheckpointError(f"{path} has no 'cfg' text; it was not written by this framework's trainer")
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise CheckpointError(f"{path}: its 'cfg' text is not valid YAML ({str(e).splitlines()[0]})") from None
    cfg = get_cfg_defaults()
    dropped = _merge_known(cfg, data)
    if dropped:
        log.info("%s: config keys unknown to this version ignored: %s", path, ", ".join(dropped))
    return inference_cfg(cfg)


def inference_cfg(cfg: CN) -> CN:
    """A frozen copy of ``cfg`` that builds the same model without reading pretrained files."""
    cfg = cfg.clone()
    cfg.defrost()
    for (section, key), value in _INFERENCE_OVERRIDES.items():
        cfg[section][key] = value
    cfg.freeze()
    return cfg


@contextmanager
def _quiet(logger_names: Sequence[str]) -> Iterator[None]:
    """Silence build-time notices that are wrong at inference ("starts from RANDOM weights")."""
    loggers = [logging.getLogger(n) for n in logger_names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


def _strip_prefixes(state: dict) -> dict:
    """Weights saved from DDP (``module.``) or torch.compile (``_orig_mod.``) wrappers."""
    out = {}
    for k, v in state.items():
        for p in ("module.", "_orig_mod."):
            while k.startswith(p):
                k = k[len(p):]
        out[k] = v
    return out


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as RGB uint8 (non-ASCII paths work); ``DataError`` when it cannot be decoded."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"image not found: {p}")
    buf = np.fromfile(p, dtype=np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
    if img is None:
        raise DataError(f"{p} is not a readable image (OpenCV could not decode it)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def experiment_dir(cfg: CN) -> Path:
    """<OUTPUT_DIR>/<DATASET.NAME>/<TEST.MODEL_FOLDER_NAME or NAME>: the experiment inference reads from."""
    return results.experiment_dir(cfg, cfg.TEST.MODEL_FOLDER_NAME or None)


def resolve_checkpoint(cfg: CN) -> Path:
    """TEST.PRETRAINED_WEIGHTS, else the experiment's best_model.pth; ``CheckpointError`` naming the keys."""
    if cfg.TEST.PRETRAINED_WEIGHTS:
        p = Path(cfg.TEST.PRETRAINED_WEIGHTS)
        if not p.is_file():
            raise CheckpointError(f"TEST.PRETRAINED_WEIGHTS: checkpoint '{p}' not found; give an existing .pth file")
        return p
    p = experiment_dir(cfg) / "best_model.pth"
    if not p.is_file():
        raise CheckpointError(f"no checkpoint at {p}; train first, or set TEST.MODEL_FOLDER_NAME (experiment "
                              "folder) or TEST.PRETRAINED_WEIGHTS (a .pth file)")
    return p


class Predictor:
    """A PAR model in eval mode plus its attribute names, groups and input size."""

    def __init__(self, model: torch.nn.Module, attr_names: Sequence[str], groups: Sequence,
                 height: int, width: int, threshold: float = 0.5,
                 device: str | torch.device | None = None, batch_size: int = 64):
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self._attr_names = list(attr_names)
        self._groups = as_groups(groups)
        self.height, self.width = int(height), int(width)
        self.threshold = float(threshold)
        self.batch_size = max(1, int(batch_size))
        self.decoder = LabelDecoder(self._attr_names, self._groups, self.threshold)
        self.cfg: CN | None = None

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device | None = None,
                        batch_size: int = 64, trusted: bool = False) -> "Predictor":
        """Rebuild the model from the checkpoint's own config and load its weights (strict)."""
        import models  # noqa: F401  (registers every backbone)
        from models.build import build_model

        ckpt = load_checkpoint(path, trusted=trusted)
        if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
            raise CheckpointError(f"{path} holds no 'model' state dict; "
                                  "pass a best_model.pth / last.pth of this framework")
        attr_names = ckpt.get("attr_names")
        if not attr_names:
            raise CheckpointError(f"{path} has no 'attr_names'; it was not written by this framework's trainer")
        cfg = cfg_from_checkpoint(ckpt, path)
        try:
            with _quiet(("models.pretrained", "models.freeze")):
                model = build_model(cfg, len(attr_names))
        except Exception as e:  # an unknown backbone name etc.: say which checkpoint asked for it
            raise CheckpointError(f"{path}: cannot rebuild its model {cfg.MODEL.NAME}/{cfg.MODEL.BACKBONE} "
                                  f"({type(e).__name__}: {str(e)[:200]})") from None
        try:
            missing, unexpected = model.load_state_dict(_strip_prefixes(ckpt["model"]), strict=False)
        except RuntimeError as e:  # shape mismatches raise even when not strict
            detail = next((ln.strip() for ln in str(e).splitlines() if "size mismatch" in ln), str(e)[:160])
            raise CheckpointError(
                f"{path}: weights do not fit the model its config describes ({detail[:200]})") from None
        if missing or unexpected:
            raise CheckpointError(
                f"{path}: weights do not fit the model its config describes ({len(missing)} missing, "
                f"{len(unexpected)} unexpected keys, e.g. {(list(missing) + list(unexpected))[:3]})"
            )
        pred = cls(model, attr_names, ckpt.get("groups") or [], cfg.DATASET.HEIGHT, cfg.DATASET.WIDTH,
                   cfg.METRIC.THRESHOLD, device, batch_size)
        pred.cfg = cfg
        log.info("loaded %s: %s/%s, %d attributes, input %dx%d, on %s", path, cfg.MODEL.NAME, cfg.MODEL.BACKBONE,
                 len(attr_names), pred.height, pred.width, pred.device)
        return pred

    @classmethod
    def from_cfg(cls, cfg: CN) -> "Predictor":
        """The checkpoint ``resolve_checkpoint(cfg)`` names, on cfg.DEVICE, batches of TEST.BATCH_SIZE."""
        return cls.from_checkpoint(resolve_checkpoint(cfg), device=cfg.DEVICE, batch_size=cfg.TEST.BATCH_SIZE,
                                   trusted=cfg.RELOAD.TRUSTED)

    @property
    def attr_names(self) -> list[str]:
        return self._attr_names

    @property
    def groups(self) -> list[AttrGroup]:
        return self._groups

    def _to_rgb(self, image: ImageLike) -> np.ndarray:
        if isinstance(image, (str, Path)):
            return read_rgb(image)
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

    def preprocess(self, images: Sequence[ImageLike]) -> torch.Tensor:
        """(N, 3, H, W) float RGB in [0, 1] on the model's device."""
        batch = np.stack([cv2.resize(self._to_rgb(im), (self.width, self.height), interpolation=cv2.INTER_LINEAR)
                          for im in images])
        # uint8 crosses to the device (4x less traffic), the float conversion happens there
        x = torch.from_numpy(batch).to(self.device).permute(0, 3, 1, 2)
        return x.float().div_(255.0).contiguous()

    @torch.inference_mode()
    def predict_images(self, images: Sequence[ImageLike]) -> np.ndarray:
        """RGB uint8 arrays or image paths -> (N, A) float32 probabilities."""
        images = list(images)
        out = [np.zeros((0, len(self._attr_names)), np.float32)]
        for i in range(0, len(images), self.batch_size):
            logits = self.model(self.preprocess(images[i:i + self.batch_size]))
            out.append(torch.sigmoid(logits.float()).cpu().numpy())
        return np.concatenate(out)

    def predict_image(self, image: ImageLike) -> np.ndarray:
        """One image -> (A,) probabilities."""
        return self.predict_images([image])[0]

    def decode(self, probs: np.ndarray) -> dict:
        """(A,) probabilities -> readable labels (see ``tools.labels.LabelDecoder``)."""
        return self.decoder.decode(probs)
