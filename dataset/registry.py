"""Dataset readers by name: ``@register_dataset("PETA")`` on a ``fn(cfg) -> PARData``."""
from __future__ import annotations

from typing import Callable

from yacs.config import CfgNode as CN

from dataset.base import DataError, PARData

_READERS: dict[str, Callable[[CN], PARData]] = {}


def register_dataset(name: str):
    def deco(fn: Callable[[CN], PARData]):
        _READERS[name.upper()] = fn
        return fn

    return deco


def available_datasets() -> list[str]:
    return sorted(_READERS)


def read_dataset(cfg: CN) -> PARData:
    """Run the reader named by ``cfg.DATASET.NAME``."""
    name = cfg.DATASET.NAME.upper()
    if name not in _READERS:
        raise DataError(
            f"DATASET.NAME = {cfg.DATASET.NAME!r} is not a known dataset; choose one of {', '.join(available_datasets())}"
        )
    return _READERS[name](cfg)
