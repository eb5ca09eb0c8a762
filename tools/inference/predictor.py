"""Run a trained PAR checkpoint on person crops: ``Predictor.from_checkpoint(path).predict_images(crops)``.

Images (files or in-memory RGB crops) go through ``dataset.images`` exactly as in training, the
model comes from ``load_for_inference``, so the probabilities equal what ``--mode eval`` computes.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence, Union

import numpy as np
import torch
from yacs.config import CfgNode as CN

from dataset.base import AttrGroup, DataError
from dataset.images import BadImage, decode_rgb, resize_rgb, to_model_input
from tools.device import select_device
from configs.errors import UserError
from tools.inference.contract import InferenceContract
from tools.inference.labels import LabelDecoder
from tools.inference.loading import LoadedModel, load_for_inference, resolve_checkpoint

log = logging.getLogger(__name__)

ImageLike = Union[np.ndarray, str, Path]


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """``auto``/None -> cuda when available, else cpu (``tools.device.select_device`` decides)."""
    return select_device("auto" if spec is None else str(spec))


def read_rgb(path: str | Path) -> np.ndarray:
    """An image file as (H, W, 3) uint8 RGB, decoded as training decodes; ``DataError`` when unreadable."""
    try:
        return decode_rgb(Path(path))
    except BadImage as e:
        raise DataError(f"{path}: {e}") from None


class Predictor:
    """A checkpoint under its inference contract: images in, probabilities and labels out."""

    def __init__(self, loaded: LoadedModel, batch_size: int = 64):
        self.loaded = loaded
        self.model = loaded.model
        self.contract: InferenceContract = loaded.contract
        self.cfg: CN = loaded.cfg
        self.device = loaded.device
        self.batch_size = max(1, int(batch_size))
        self.decoder = LabelDecoder.from_contract(self.contract)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device | None = None,
                        batch_size: int = 64, trusted: bool = False) -> "Predictor":
        """The checkpoint's own model, weights and contract (see ``load_for_inference``)."""
        return cls(load_for_inference(path, resolve_device(device), trusted), batch_size)

    @classmethod
    def from_cfg(cls, cfg: CN) -> "Predictor":
        """The checkpoint ``resolve_checkpoint(cfg)`` names, on cfg.DEVICE, batches of TEST.BATCH_SIZE."""
        return cls.from_checkpoint(resolve_checkpoint(cfg), device=cfg.DEVICE, batch_size=cfg.TEST.BATCH_SIZE,
                                   trusted=cfg.RELOAD.TRUSTED)

    @property
    def attr_names(self) -> list[str]:
        return list(self.contract.attr_names)

    @property
    def groups(self) -> list[AttrGroup]:
        return self.contract.attr_groups

    @property
    def height(self) -> int:
        return self.contract.height

    @property
    def width(self) -> int:
        return self.contract.width

    def _resized(self, image: ImageLike) -> np.ndarray:
        rgb = read_rgb(image) if isinstance(image, (str, Path)) else image
        return resize_rgb(rgb, (self.height, self.width))

    def preprocess(self, images: Sequence[ImageLike]) -> torch.Tensor:
        """(N, 3, H, W) float RGB in [0, 1] on the model's device, as the training loader makes it."""
        batch = torch.from_numpy(np.stack([self._resized(im) for im in images])).permute(0, 3, 1, 2).contiguous()
        return to_model_input(batch.to(self.device))

    runtime = "torch"  # what runs the network: "torch" here, "onnx" in OnnxPredictor

    @torch.inference_mode()
    def forward(self, batch: torch.Tensor) -> np.ndarray:
        """A preprocessed batch -> (N, A) float32 probabilities (``OnnxPredictor`` runs onnxruntime here)."""
        return self.model(batch).cpu().numpy()

    @torch.inference_mode()
    def embed_forward(self, batch: torch.Tensor) -> np.ndarray:
        """A preprocessed batch -> (N, D) float32 embeddings."""
        return self.model.embed(batch).cpu().numpy()

    @torch.inference_mode()
    def forward_both(self, batch: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """A preprocessed batch -> (probabilities, embeddings) from one pass of a reid / multitask model."""
        probs, emb = self.model.probs_and_embed(batch)
        return probs.cpu().numpy(), emb.cpu().numpy()

    def _batched(self, images: Sequence[ImageLike], forward, widths: Sequence[int]) -> list[np.ndarray]:
        """``forward(preprocessed batch) -> tuple of (n, w) arrays`` over batches of ``batch_size``, joined."""
        images = list(images)
        outs = [[np.zeros((0, w), np.float32)] for w in widths]
        for i in range(0, len(images), self.batch_size):
            for acc, arr in zip(outs, forward(self.preprocess(images[i:i + self.batch_size]))):
                acc.append(arr)
        return [np.concatenate(acc) for acc in outs]

    def predict_images(self, images: Sequence[ImageLike]) -> np.ndarray:
        """RGB uint8 arrays or image paths -> (N, A) float32 probabilities (before any group decoding)."""
        return self._batched(images, lambda b: (self.forward(b),), [len(self.contract.attr_names)])[0]

    @property
    def has_embeddings(self) -> bool:
        """A TASK reid / multitask checkpoint: ``embed_images`` gives its appearance embeddings."""
        return self.contract.task in ("reid", "multitask")

    def _need_embeddings(self) -> None:
        if not self.has_embeddings:
            raise UserError(f"{self.loaded.path} has no embedding head (TASK {self.contract.task}); search by "
                            "example needs a checkpoint trained with TASK reid or multitask")

    def embed_images(self, images: Sequence[ImageLike]) -> np.ndarray:
        """RGB uint8 arrays or image paths -> (N, D) float32 appearance embeddings (reid / multitask only)."""
        self._need_embeddings()
        return self._batched(images, lambda b: (self.embed_forward(b),), [self.contract.embed_dim])[0]

    @torch.inference_mode()
    def appearance_features(self, images: Sequence[ImageLike]) -> np.ndarray:
        """RGB uint8 arrays or image paths -> (N, D) float32 appearance features of any checkpoint (``embed_images``
        of a reid / multitask model, the backbone's pooled features of a PAR one), on the torch model."""
        images, out = list(images), []
        for i in range(0, len(images), self.batch_size):
            out.append(self.model.features(self.preprocess(images[i:i + self.batch_size])).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)  # the width is unknown without a pass

    def predict_with_embeddings(self, images: Sequence[ImageLike]) -> tuple[np.ndarray, np.ndarray]:
        """(N, A) probabilities and (N, D) embeddings from one network pass per batch (reid / multitask)."""
        self._need_embeddings()
        probs, embs = self._batched(images, self.forward_both, [len(self.contract.attr_names), self.contract.embed_dim])
        return probs, embs

    def predict_image(self, image: ImageLike) -> np.ndarray:
        """One image -> (A,) probabilities."""
        return self.predict_images([image])[0]

    def decode(self, probs: np.ndarray) -> dict:
        """(A,) probabilities -> readable labels (see ``tools.inference.labels.LabelDecoder``)."""
        return self.decoder.decode(probs)
