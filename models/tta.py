"""Test-time augmentation: a person crop and its left-right mirror, averaged (``TEST.FLIP``).

Attribute logits and ReID embeddings are averaged over the two views, as fast-reid's ``TEST.FLIP`` does for
features. People are left-right symmetric in every attribute this framework reads, so the mirror is a second
honest look at the same person. Both views run as one batch (one backbone call, twice the rows).
"""
from __future__ import annotations

from functools import partial

import torch
from torch import nn


def _mean_of_views(out):
    """The average of the first and second half (the crops, their mirrors) of a batched output; written
    without the batch size so that an ONNX export keeps the batch dimension dynamic."""
    if isinstance(out, torch.Tensor):
        return out.unflatten(0, (2, -1)).mean(0)
    if isinstance(out, dict):
        return {k: _mean_of_views(v) for k, v in out.items()}
    if isinstance(out, tuple):
        return tuple(_mean_of_views(v) for v in out)
    raise TypeError(f"flip averaging: cannot average an output of type {type(out).__name__}")


VIEW_METHODS = ("embed", "forward_features", "forward_attrs", "attrs_and_embed")  # besides forward


class FlipAveraged(nn.Module):
    """``model`` on (N, 3, H, W) crops and their mirrors: ``forward`` and each of VIEW_METHODS that ``model``
    has give the average of the two views (so ``hasattr`` answers as for ``model``). Holds no weights of its
    own: checkpoints save ``model``, never this wrapper."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        for name in VIEW_METHODS:
            if hasattr(model, name):
                setattr(self, name, partial(self._both, name))

    def _both(self, method: str, x: torch.Tensor):
        return _mean_of_views(getattr(self.model, method)(torch.cat([x, x.flip(-1)])))

    def forward(self, x: torch.Tensor):
        return self._both("forward", x)

    @property
    def embed_dim(self) -> int:
        return int(getattr(self.model, "embed_dim", 0))


def flip_averaged(model: nn.Module, flip: bool) -> nn.Module:
    """``model`` wrapped in FlipAveraged when ``flip`` (and not already wrapped), else ``model`` itself."""
    return FlipAveraged(model) if flip and not isinstance(model, FlipAveraged) else model


def unwrapped(model: nn.Module) -> nn.Module:
    """The network inside a FlipAveraged (or the model itself)."""
    return model.model if isinstance(model, FlipAveraged) else model
