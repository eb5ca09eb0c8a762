"""Pretrained weights come from local files only; nothing is ever downloaded."""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)


class WeightsError(FileNotFoundError):
    """A missing or unusable weight file; the message names the config key to set."""


def load_pretrained(model: nn.Module, path: str, key: str) -> None:
    """Load a timm-format state dict from ``path`` into ``model`` (``"none"`` = random init)."""
    if not path or path.lower() == "none":
        log.warning("%s = none: %s starts from RANDOM weights (set %s to a local weight file to fine-tune)",
                    key, type(model).__name__, key)
        return
    p = Path(path)
    if not p.is_file():
        raise WeightsError(f"{key}: weight file '{path}' not found; set {key} to a local .pth/.safetensors file or 'none'")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(p))
    else:
        state = torch.load(p, map_location="cpu", weights_only=True)
    for k in ("state_dict", "model", "state_dicts"):
        if isinstance(state, dict) and k in state and isinstance(state[k], dict):
            state = state[k]
    missing, unexpected = model.load_state_dict(state, strict=False)
    log.info("%s: loaded %s (%d missing, %d unexpected keys)", key, path, len(missing), len(unexpected))
