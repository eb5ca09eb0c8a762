"""Inference: checkpoint loading under its contract, the predictor, label decoding, ONNX export.

``load_for_inference(path)`` is the only way eval, predict, video, search and the ONNX export
build a model; ``Predictor`` adds batching and the shared image preprocessing (``dataset.images``).
"""
from tools.inference.contract import ContractModel, InferenceContract, ProbabilityHead, contract_for_run
from tools.inference.labels import LabelDecoder
from tools.inference.loading import (LoadedModel, cfg_from_checkpoint, experiment_dir, inference_cfg,
                                     load_for_inference, resolve_checkpoint)
from tools.inference.predictor import Predictor, read_rgb, resolve_device

__all__ = ["ContractModel", "InferenceContract", "LabelDecoder", "LoadedModel", "Predictor", "ProbabilityHead",
           "cfg_from_checkpoint", "contract_for_run", "experiment_dir", "inference_cfg", "load_for_inference",
           "read_rgb", "resolve_checkpoint", "resolve_device"]
