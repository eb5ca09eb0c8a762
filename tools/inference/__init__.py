"""Inference: checkpoint loading under its contract, the predictor, label decoding, ONNX export.

``load_for_inference(path)`` is the only way eval, predict, video, search and the ONNX export
build a model; ``Predictor`` adds batching and the shared image preprocessing (``dataset.images``).
The names below are imported on first use (PEP 562), so ``tools.inference.names`` and the search front
door do not pay for torch.
"""
from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "ContractModel": "contract", "InferenceContract": "contract", "ProbabilityHead": "contract",
    "contract_for_run": "contract", "LabelDecoder": "labels", "LoadedModel": "loading",
    "cfg_from_checkpoint": "loading", "experiment_dir": "loading", "inference_cfg": "loading",
    "load_for_inference": "loading", "resolve_checkpoint": "loading", "Predictor": "predictor",
    "read_rgb": "predictor", "resolve_device": "predictor",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'tools.inference' has no attribute {name!r}")
    return getattr(importlib.import_module(f"tools.inference.{_WHERE[name]}"), name)
