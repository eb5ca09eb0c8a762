"""Export a PAR checkpoint to ONNX (dynamic batch axis), checked with onnxruntime.

    uv run python -m scripts.export_onnx --checkpoint exp_results/NATIVE/lite/best_model.pth --out par.onnx
    uv run python -m scripts.export_onnx --config-file configs/native.yaml [KEY VALUE ...]

The graph computes what the predictor returns (see ``tools.inference.onnx``).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

from configs.errors import exit_code_of
from tools.inference.onnx import DEFAULT_OPSET, ExportError, export_onnx, verify_onnx
from tools.inference.predictor import Predictor

__all__ = ["ExportError", "export_onnx", "main", "verify_onnx"]


def main(argv: Sequence[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description="Export a PAR checkpoint to ONNX")
    ap.add_argument("--checkpoint", help="a .pth written by this framework")
    ap.add_argument("--config-file", "--config", dest="config_file",
                    help="else: TEST.PRETRAINED_WEIGHTS / the experiment's best_model.pth")
    ap.add_argument("--out", help="ONNX file (default: next to the checkpoint, .onnx)")
    ap.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    ap.add_argument("--no-verify", action="store_true", help="skip the onnxruntime comparison")
    ap.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides (with --config-file)")
    a = ap.parse_args(argv)
    if a.checkpoint:
        ckpt, trusted = Path(a.checkpoint), False
    elif a.config_file:
        from configs.loader import load_config
        from tools.inference.loading import resolve_checkpoint

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
    sys.exit(exit_code_of(main))
