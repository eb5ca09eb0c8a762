"""Per-step training time of the fine-tuning modes (full / partial / head) of a C2T-Net preset.

A step is forward + BCE loss + backward + optimizer step on random data, with frozen parameters
left out of the optimizer and frozen branches in eval mode without autograd, as in training.

    uv run python scripts/benchmark_finetune.py                                  # c2t_lite, batch 16, CPU
    uv run python scripts/benchmark_finetune.py --preset c2t_small --batch 8 --modes full head
    uv run python scripts/benchmark_finetune.py --gpu-base   # + c2t_base, AMP, batch 64 (needs CUDA)

On a CPU shared with other jobs, ``--threads 1`` gives far steadier figures than OpenMP threads
competing for the cores.
"""
from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from configs.default import get_cfg_defaults  # noqa: E402
from configs.errors import exit_code_of
from models import build_model  # noqa: E402
from models.freeze import apply_finetune_mode  # noqa: E402

MODES = {"full": ("full", False), "partial": ("partial", False), "partial+ta": ("partial", True),
         "head": ("head", False)}
N_ATTR = 26


def amp_dtype(device: torch.device, amp: str) -> torch.dtype | None:
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "fp16":
        return torch.float16
    if amp == "bf16" or (device.type == "cuda" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


def time_mode(model, mode: str, train_ta: bool, batch: int, hw: tuple[int, int], steps: int, warmup: int,
              device: torch.device, dtype: torch.dtype | None) -> dict:
    counts = apply_finetune_mode(model, mode, train_ta)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    x = torch.rand(batch, 3, *hw, device=device)
    y = torch.randint(0, 2, (batch, N_ATTR), device=device).float()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for i in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = F.binary_cross_entropy_with_logits(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    out = {"trainable": sum(t for t, _ in counts.values()), "ms": 1000 * statistics.median(times),
           "ms_min": 1000 * min(times)}
    if device.type == "cuda":
        out["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2 ** 30
    return out


def benchmark(preset: str, batch: int, hw: tuple[int, int], modes: list[str], steps: int, warmup: int,
              device: torch.device, amp: str) -> list[dict]:
    cfg = get_cfg_defaults()
    cfg.MODEL.NAME = preset
    cfg.DATASET.HEIGHT, cfg.DATASET.WIDTH = hw
    model = build_model(cfg, N_ATTR).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    dtype = amp_dtype(device, amp)
    rows = []
    for name in modes:
        mode, train_ta = MODES[name]
        r = time_mode(model, mode, train_ta, batch, hw, steps, warmup, device, dtype)
        rows.append({"preset": preset, "device": device.type, "amp": str(dtype).replace("torch.", "") if dtype else "off",
                     "batch": batch, "mode": name, **r})
    return rows


def print_table(rows: list[dict]) -> None:
    full = {r["preset"]: r["ms"] for r in rows if r["mode"] == "full"}
    head = f"{'preset':<10} {'device':<6} {'amp':<8} {'batch':>5} {'mode':<11} {'trainable':>13} " \
           f"{'ms/step':>9} {'min':>9} {'vs full':>8}"
    has_mem = any("peak_gib" in r for r in rows)
    print(head + (f" {'peak GiB':>9}" if has_mem else ""))
    for r in rows:
        speed = f"{full[r['preset']] / r['ms']:.2f}x" if r["preset"] in full else "-"
        line = (f"{r['preset']:<10} {r['device']:<6} {r['amp']:<8} {r['batch']:>5} {r['mode']:<11} "
                f"{r['trainable']:>13,} {r['ms']:>9.1f} {r['ms_min']:>9.1f} {speed:>8}")
        print(line + (f" {r.get('peak_gib', float('nan')):>9.2f}" if has_mem else ""))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="c2t_lite", help="registered c2t_* model (default c2t_lite)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--height", type=int, default=256)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--modes", nargs="+", default=["full", "partial", "head"], choices=list(MODES))
    ap.add_argument("--steps", type=int, default=5, help="timed steps per mode (median reported)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    ap.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "off"], help="auto: bf16/fp16 on CUDA")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0 = torch default)")
    ap.add_argument("--gpu-base", action="store_true",
                    help="also time c2t_base at 256x128, AMP, batch --base-batch on CUDA (skipped without CUDA)")
    ap.add_argument("--base-batch", type=int, default=64)
    ap.add_argument("-v", "--verbose", action="store_true", help="show the model-building log")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.steps < 1 or args.batch < 1:
        ap.error("--steps and --batch must be >= 1")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA device here; use --device cpu")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
          + (f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""), flush=True)
    rows = benchmark(args.preset, args.batch, (args.height, args.width), args.modes, args.steps, args.warmup,
                     device, args.amp)
    if args.gpu_base:
        if torch.cuda.is_available():
            rows += benchmark("c2t_base", args.base_batch, (256, 128), args.modes, args.steps, args.warmup,
                              torch.device("cuda"), "auto" if args.amp == "off" else args.amp)
        else:
            print("--gpu-base: no CUDA device here, c2t_base skipped", file=sys.stderr)
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(exit_code_of(main))
