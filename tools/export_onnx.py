"""Export a PAR checkpoint to ONNX (dynamic batch axis) and check it against PyTorch with onnxruntime.

    uv run python -m tools.export_onnx --checkpoint exp_results/NATIVE/lite/best_model.pth --out par.onnx
    uv run python -m tools.export_onnx --config-file configs/native.yaml [KEY VALUE ...]

Input ``images``: (N, 3, H, W) float32 RGB in [0, 1] (normalisation is inside the graph).
Output ``logits``: (N, A); apply a sigmoid for probabilities. The attribute names, groups and input
size are stored in the model's metadata (``attr_names``, ``groups``, ``input_height``, ``input_width``).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from tools.errors import UserError
from tools.inference import Predictor

log = logging.getLogger(__name__)

DEFAULT_OPSET = 18  # the dynamo exporter's minimum; run by any onnxruntime >= 1.14
EXTERNAL_DATA_BYTES = 1_800_000_000  # protobuf caps a single file at 2 GB: bigger weights go to a .data file


class ExportError(UserError, RuntimeError):
    """The model could not be exported or the exported graph disagrees with PyTorch."""


def _export(model: torch.nn.Module, x: torch.Tensor, out: Path, opset: int, external: bool) -> None:
    names = {"input_names": ["images"], "output_names": ["logits"]}
    try:
        torch.onnx.export(model, (x,), str(out), dynamo=True, opset_version=opset, external_data=external,
                          dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},), verbose=False, **names)
        return
    except Exception as e:  # some graphs only go through the older TorchScript exporter
        log.warning("dynamo ONNX export failed (%s: %s); retrying with the TorchScript exporter",
                    type(e).__name__, str(e).splitlines()[0][:160] if str(e) else "")
    torch.onnx.export(model, (x,), str(out), dynamo=False, opset_version=opset,
                      dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}}, **names)


def _add_metadata(path: Path, meta: dict[str, str]) -> None:
    import onnx

    m = onnx.load(str(path), load_external_data=False)  # external weights stay where they are
    for k, v in meta.items():
        entry = m.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.save(m, str(path))


def verify_onnx(model: torch.nn.Module, onnx_path: str | Path, height: int, width: int,
                batch_sizes: Sequence[int] = (1, 3), atol: float = 1e-4, seed: int = 0) -> float:
    """Max |onnxruntime - PyTorch| over random batches of each size; ``ExportError`` above ``atol``."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    gen = torch.Generator().manual_seed(seed)
    model = model.eval().cpu()
    worst = 0.0
    for b in batch_sizes:
        x = torch.rand(b, 3, height, width, generator=gen)
        with torch.inference_mode():
            ref = model(x).float().numpy()
        got = sess.run(["logits"], {"images": x.numpy()})[0]
        if got.shape != ref.shape:
            raise ExportError(f"{onnx_path}: batch {b} gives shape {got.shape}, PyTorch {ref.shape}")
        worst = max(worst, float(np.abs(got - ref).max()))
    if worst > atol:
        raise ExportError(f"{onnx_path}: onnxruntime differs from PyTorch by {worst:.2e} (> {atol:g})")
    return worst


def export_onnx(predictor: Predictor, out: str | Path, opset: int = DEFAULT_OPSET, verify: bool = True,
                atol: float = 1e-4) -> Path:
    """Write ``out`` from a loaded ``Predictor`` (model on CPU, fp32); verified at batch 1 and 3."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model = predictor.model.cpu().float().eval()
    x = torch.rand(2, 3, predictor.height, predictor.width)
    n_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    try:
        with torch.no_grad():
            _export(model, x, out, opset, external=n_bytes > EXTERNAL_DATA_BYTES)
    except Exception as e:
        raise ExportError(f"ONNX export of {type(model).__name__} failed: {type(e).__name__}: {str(e)[:200]}") from None
    _add_metadata(out, {
        "attr_names": json.dumps(predictor.attr_names),
        "groups": json.dumps([[g.name, g.kind, *g.attrs] for g in predictor.groups]),
        "input_height": str(predictor.height), "input_width": str(predictor.width),
        "input": "images: float32 (N, 3, H, W) RGB in [0, 1]", "output": "logits: (N, A); sigmoid -> probabilities",
        "threshold": str(predictor.threshold),
    })
    if verify:
        try:
            diff = verify_onnx(model, out, predictor.height, predictor.width, atol=atol)
            log.info("verified %s with onnxruntime: max |diff| %.2e at batch 1 and 3", out, diff)
        except ImportError:
            log.warning("onnxruntime is not installed: %s not verified (uv sync --group dev)", out)
    log.info("exported %s (%d attributes, input %dx%d, opset %d)", out, len(predictor.attr_names),
             predictor.height, predictor.width, opset)
    return out


def main(argv: Sequence[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description="Export a PAR checkpoint to ONNX")
    ap.add_argument("--checkpoint", help="a .pth written by this framework")
    ap.add_argument("--config-file", help="else: TEST.PRETRAINED_WEIGHTS / the experiment's best_model.pth")
    ap.add_argument("--out", help="ONNX file (default: next to the checkpoint, .onnx)")
    ap.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    ap.add_argument("--no-verify", action="store_true", help="skip the onnxruntime comparison")
    ap.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides (with --config-file)")
    a = ap.parse_args(argv)
    if a.checkpoint:
        ckpt, trusted = Path(a.checkpoint), False
    elif a.config_file:
        from configs.loader import load_config
        from tools.inference import resolve_checkpoint

        cfg = load_config(a.config_file, a.opts)
        ckpt, trusted = resolve_checkpoint(cfg), cfg.RELOAD.TRUSTED
    else:
        ap.error("give --checkpoint PATH or --config-file YAML")
    predictor = Predictor.from_checkpoint(ckpt, device="cpu", trusted=trusted)
    return export_onnx(predictor, a.out or ckpt.with_suffix(".onnx"), a.opset, verify=not a.no_verify)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("onnxscript", "onnx_ir", "torch.onnx"):  # one line per optimisation pass otherwise
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        main()
    except Exception as e:  # one line, not a traceback, for the errors a user can fix
        from tools.checkpoint import CheckpointError

        if isinstance(e, (ExportError, CheckpointError, ValueError)):
            sys.exit(f"error: {e}")
        raise
