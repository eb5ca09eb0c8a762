"""Backbones by name, timm style: ``@register_model("c2t_base")`` on ``fn(cfg) -> Backbone``."""
from __future__ import annotations

from typing import Callable

from torch import nn
from yacs.config import CfgNode as CN

_MODELS: dict[str, Callable[[CN], nn.Module]] = {}


def register_model(name: str):
    def deco(fn: Callable[[CN], nn.Module]):
        if name in _MODELS:
            raise KeyError(f"model '{name}' registered twice")
        _MODELS[name] = fn
        return fn

    return deco


def list_models() -> list[str]:
    return sorted(_MODELS)


def create_backbone(cfg: CN) -> nn.Module:
    """Build the backbone named by ``cfg.MODEL.NAME`` (a module with ``out_dim`` and ``param_groups()``)."""
    name = cfg.MODEL.NAME
    if name not in _MODELS:
        raise KeyError(f"MODEL.NAME = {name!r} is not registered; choose one of {', '.join(list_models())}")
    return _MODELS[name](cfg)
