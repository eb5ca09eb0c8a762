"""Backbone + linear head, with named parameter groups (the one place that defines them)."""
from __future__ import annotations

import torch
from torch import nn

from models.split_head import SplitHead

# Groups whose weights come from pretraining train at LR_FT; every other group (TA, fusion, head) at LR_NEW.
PRETRAINED_GROUPS = ("backbone", "spatial", "vit")



class ClassifierHead(nn.Module):
    """Linear layer from the backbone feature to one logit per attribute (optional BatchNorm1d)."""

    def __init__(self, in_dim: int, num_attrs: int, bn: bool = False):
        super().__init__()
        self.logits = nn.Linear(in_dim, num_attrs)
        self.bn = nn.BatchNorm1d(num_attrs) if bn else nn.Identity()

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        return self.bn(self.logits(feat))


class InputNormalisation(nn.Module):
    """What every model built on a backbone shares (PARModel, ReIDModel).

    The input normalisation the backbone was pretrained with is applied inside the model: inputs are
    RGB in [0, 1], so training, video, ONNX export and user code all feed the same thing (non-persistent
    buffers: an inference contract carries the values, ``set_normalisation``). Subclasses define
    ``backbone`` and ``param_groups()``; fully frozen groups stay in eval mode when training."""

    def shared_params(self) -> list[nn.Parameter]:
        return list(self.backbone.shared_params())

    def train(self, mode: bool = True) -> "InputNormalisation":
        """Fully frozen groups stay in eval mode (no dropout, no BatchNorm statistic updates)."""
        super().train(mode)
        if mode:
            for modules in self.param_groups().values():
                params = [p for m in modules for p in m.parameters()]
                if params and not any(p.requires_grad for p in params):
                    for m in modules:
                        m.eval()
        return self

    def _register_normalisation(self, backbone: nn.Module) -> None:
        p = backbone.preprocessing  # what its weights expect (models.pretrained.Preprocessing)
        self.register_buffer("mean", torch.tensor(p.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(p.std).view(1, 3, 1, 1), persistent=False)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def normalisation(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(mean, std) per RGB channel that ``forward`` applies to its [0, 1] input."""
        return tuple(self.mean.flatten().tolist()), tuple(self.std.flatten().tolist())

    def set_normalisation(self, mean, std) -> None:
        """Use another input normalisation (an inference contract's; the buffers are not saved)."""
        self.mean.copy_(torch.tensor(mean, dtype=self.mean.dtype).view(1, 3, 1, 1))
        self.std.copy_(torch.tensor(std, dtype=self.std.dtype).view(1, 3, 1, 1))


class PARModel(InputNormalisation):
    """``backbone(x) -> (B, D)`` features, ``head -> (B, num_attrs)`` logits.

    The backbone exposes ``out_dim``, ``preprocessing`` (its weights' input normalisation,
    ``models.pretrained.Preprocessing``), ``param_groups() -> {group: [modules]}`` and
    ``shared_params()`` (the last layer before the head, for GradNorm). Groups named in
    ``PRETRAINED_GROUPS`` take ``LR_FT``; every other group takes ``LR_NEW``.
    """

    def __init__(self, backbone: nn.Module, num_attrs: int, head_bn: bool = False, head: str = "linear"):
        super().__init__()
        self.backbone = backbone
        if head not in ("linear", "split"):
            raise ValueError(f"MODEL.HEAD = {head!r} is not one of linear | split")
        self.head = SplitHead(backbone.out_dim, num_attrs) if head == "split" else \
            ClassifierHead(backbone.out_dim, num_attrs, head_bn)
        self.num_attrs = num_attrs
        self._register_normalisation(backbone)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) RGB in [0, 1] -> (B, D) features."""
        return self.backbone(self.normalise(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) RGB in [0, 1] -> (B, num_attrs) logits."""
        return self.head(self.forward_features(x))

    def forward_attr_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, num_attrs, D) per-attribute features (MODEL.HEAD split); ``head.classifier``
        maps them to logits."""
        if not isinstance(self.head, SplitHead):
            raise TypeError("forward_attr_features needs MODEL.HEAD split")
        return self.head.attr_features(self.forward_features(x))

    def param_groups(self) -> dict[str, list[nn.Module]]:
        """The backbone's groups, then (split head) ``split`` (the feature split, part of the extractor,
        LR_NEW), then ``head`` (the classifiers)."""
        if isinstance(self.head, SplitHead):
            return {**self.backbone.param_groups(), "split": [self.head.split], "head": [self.head.classifier]}
        return {**self.backbone.param_groups(), "head": [self.head]}
