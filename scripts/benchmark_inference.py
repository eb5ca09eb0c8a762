"""PAR inference speed of a checkpoint: PyTorch vs onnxruntime, crops per second by batch size (not a test).

    uv run python -m scripts.benchmark_inference --checkpoint exp_results/NATIVE/lite0_native/best_model.pth \
        --batch-sizes 1 4 16 --threads 2 --seconds 5

Both runtimes get the same preprocessed random batch on the CPU, after ``--warmup`` untimed calls; each
figure is batches run in ``--seconds`` x batch size / elapsed. The ONNX file is the one the video pipeline
uses (``onnx_for_checkpoint``: exported beside the checkpoint once). TEST.PAR_RUNTIME auto picks onnx on a
CPU because of these figures.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Callable

import torch

from configs.errors import exit_code_of


def _rate(fn: Callable[[], object], batch: int, seconds: float, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        n += 1
    return n * batch / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a best_model.pth")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--threads", type=int, default=0, help="intra-op threads of both runtimes (0 = their default)")
    p.add_argument("--seconds", type=float, default=5.0, help="timed seconds per runtime and batch size")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--json", default="", help="also write the rows to this JSON file")
    args = p.parse_args(argv)
    from tools.inference import Predictor
    from tools.inference.onnx import OnnxPredictor, onnx_for_checkpoint

    if args.threads:
        torch.set_num_threads(args.threads)
    pred = Predictor.from_checkpoint(args.checkpoint, device="cpu")
    fast = OnnxPredictor(pred, onnx_for_checkpoint(pred), threads=args.threads)
    rows = []
    for b in args.batch_sizes:
        x = torch.rand(b, 3, pred.height, pred.width)
        row = {"batch": b, "torch_crops_per_s": round(_rate(lambda: pred.forward(x), b, args.seconds, args.warmup), 1),
               "onnx_crops_per_s": round(_rate(lambda: fast.forward(x), b, args.seconds, args.warmup), 1)}
        rows.append(row)
        print(f"batch {b:3d}: torch {row['torch_crops_per_s']:7.1f} crops/s | onnxruntime "
              f"{row['onnx_crops_per_s']:7.1f} crops/s ({row['onnx_crops_per_s'] / row['torch_crops_per_s']:.2f}x)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"checkpoint": args.checkpoint, "threads": args.threads, "rows": rows}, f, indent=1)
    return rows


if __name__ == "__main__":
    sys.exit(exit_code_of(main))
