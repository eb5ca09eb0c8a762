"""Side-by-side speed figures of the framework against a bare PyTorch loop (not a test).

    uv run python -m scripts.benchmark --config-file configs/native_lite.yaml --batch-size 32 --device cpu \
        --amp off --steps 8 --repeats 3 [--json bench.json] [--reference]

On the same model and batch size it measures
  (a) bare loop: the PARModel of the config, fixed random tensors, BCE, forward + backward + step;
  (b) framework: ``tools.engine.loop.train_one_epoch`` on real batches from ``build_loaders`` with the
      config's loss, optimizer, clipping and EMA; (b)/(a) is the framework's overhead;
  (c) eval images/s through ``tools.evaluation.forward.validate``;
  (d) the data path alone (cached batches + augmentation, no model);
  (e) peak memory (CUDA: max allocated per phase; CPU: the process's max RSS);
and, with --reference, the original study's training step (fp32, anomaly detection, a host sync
and host copies every step, PyTorch's default kernels, explicit attention). On CUDA it also counts
the forward FLOPs (a training step ~ 3x) and reports the achieved fraction of --peak-tflops.

(a) and (b) run back to back ``--repeats`` times (a b, b a, a b, ...); the headline ratio is the
median of the per-pair ratios, so a machine shared with other jobs (whose load drifts) biases
neither side. Both loops run under the framework's kernel settings (tools.device.configure_backends).

GPU comparison (issue 6):
    uv run python -m scripts.benchmark --config-file configs/native.yaml --batch-size 64 --device cuda \
        --amp bf16 --steps 10 --repeats 5 --reference --json c2t_base_bf16.json
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import resource
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F

from configs.errors import exit_code_of

log = logging.getLogger("benchmark")

H100_BF16_DENSE_TFLOPS = 989.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Framework vs bare-loop training speed, eval, data path, memory.")
    p.add_argument("--config-file", "--config", dest="config", default="configs/native_lite.yaml",
                   help="experiment YAML (the preset); --config is the old spelling")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto")
    p.add_argument("--amp", default="auto", choices=("auto", "bf16", "fp16", "off"),
                   help="auto = the framework's default (bf16 on CUDA where supported, else fp16; off on CPU)")
    p.add_argument("--steps", type=int, default=8, help="timed training steps per repetition")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before timing (each of a and b)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved repetitions (a b a b ...); medians reported")
    p.add_argument("--eval-batches", type=int, default=4, help="eval batches per repetition (0 = whole split)")
    p.add_argument("--data", default="config", choices=("config", "synth"),
                   help="config: the config's dataset (SYNTH when its files are missing); synth: always SYNTH")
    p.add_argument("--reference", action="store_true",
                   help="also time the original training step: fp32, set_detect_anomaly(True), per-step syncs")
    p.add_argument("--peak-tflops", type=float, default=H100_BF16_DENSE_TFLOPS,
                   help="the accelerator's peak TFLOP/s for the fraction-of-peak figure (H100 bf16 dense: 989)")
    p.add_argument("--threads", type=int, default=0,
                   help="CPU threads of torch (0 = torch's default); on a CPU shared with other jobs, 1 avoids "
                        "OpenMP oversubscription stalls that swamp the figures")
    p.add_argument("--json", default="", help="also write the results to this JSON file")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides, e.g. MODEL.NAME c2t_lite")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- set-up
def bench_config(args: argparse.Namespace):
    from configs import load_config

    cfg = load_config(args.config, list(args.opts)).clone()
    cfg.defrost()
    cfg.TRAIN.BATCH_SIZE = args.batch_size
    cfg.TEST.BATCH_SIZE = max(cfg.TEST.BATCH_SIZE, args.batch_size)
    cfg.DEVICE = args.device
    cfg.TRAIN.AMP = args.amp
    if args.data == "synth":
        _use_synth(cfg)
    return cfg


def _use_synth(cfg) -> None:
    """Generated images at the config's input size (the attribute count then differs: SYNTH has 10)."""
    cfg.DATASET.NAME = "SYNTH"
    cfg.DATASET.ROOT = ""
    cfg.DATASET.ATTRS = []
    cfg.DATASET.GROUPS = []
    cfg.DATASET.SOURCES = []
    cfg.DATASET.TRAIN_SPLIT, cfg.DATASET.VAL_SPLIT, cfg.DATASET.TEST_SPLIT = "train", "val", "test"
    cfg.LOSS.TERMS = []


def load_data(cfg, device: torch.device):
    """(data, loaders, note); falls back to SYNTH when the config's data files are missing."""
    from dataset import build_data, build_loaders
    from dataset.base import DataError

    note = cfg.DATASET.NAME
    try:
        data = build_data(cfg)
    except (DataError, FileNotFoundError, OSError) as e:
        print(f"note: {cfg.DATASET.NAME} data unavailable ({str(e).splitlines()[0][:120]}); using SYNTH",
              file=sys.stderr)
        _use_synth(cfg)
        data = build_data(cfg)
        note = f"SYNTH (fallback from {note})"
    splits = [cfg.DATASET.TRAIN_SPLIT, cfg.DATASET.VAL_SPLIT]
    loaders, _ = build_loaders(cfg, data, splits, device)
    return data, loaders, note


class LimitedLoader:
    """The first ``steps`` batches of a loader, continuing into the next epoch when one runs out;
    also records how long the consumer waited for each batch (the data-path share of a step)."""

    def __init__(self, loader, steps: int):
        self.loader, self.steps = loader, steps
        self.epoch = 0
        self.wait_s = 0.0
        self._it = None

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        for _ in range(self.steps):
            t0 = time.perf_counter()
            try:
                batch = next(self._it) if self._it is not None else None
            except StopIteration:
                batch = None
            if batch is None:
                self.loader.set_epoch(self.epoch)
                self.epoch += 1
                self._it = iter(self.loader)
                batch = next(self._it)
            self.wait_s += time.perf_counter() - t0
            yield batch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(device: torch.device, fn) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _state_mb(optimizer: torch.optim.Optimizer) -> float:
    return sum(t.nbytes for st in optimizer.state.values() for t in st.values() if torch.is_tensor(t)) / 2**20


# ----------------------------------------------------------------------------- the measured loops
def make_bare_step(model, optimizer, batch: int, num_attrs: int, size_hw, device, amp_dtype, scaler,
                   channels_last: bool):
    """Forward + backward + step on fixed random tensors; plain BCE (sum over attributes, mean over batch)."""
    x = torch.rand(batch, 3, *size_hw, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = (torch.rand(batch, num_attrs, device=device) > 0.5).float()
    cast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext()

    def step(n: int) -> None:
        model.train()
        for _ in range(n):
            with cast:
                logits = model(x)
            loss = F.binary_cross_entropy_with_logits(logits.float(), y, reduction="sum") / batch
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()

    return step


def make_reference_step(model, batch: int, num_attrs: int, size_hw, device, lr: float, weight_decay: float,
                        clip: float):
    """The original study's step: fp32, anomaly detection on, Adam with PyTorch's default
    implementation, clip_grad_norm_, then a host sync for the running loss and host copies of labels
    and probabilities every step (as its batch engine did)."""
    x = torch.rand(batch, 3, *size_hw, device=device)
    y = (torch.rand(batch, num_attrs, device=device) > 0.5).float()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr,
                                 weight_decay=weight_decay)
    kept: list = []

    def step(n: int) -> None:
        model.train()
        with torch.autograd.set_detect_anomaly(True):
            for _ in range(n):
                logits = model(x)
                loss = F.binary_cross_entropy_with_logits(logits, y, reduction="sum") / batch
                optimizer.zero_grad()
                loss.backward()
                if clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=clip)
                optimizer.step()
                kept.append(loss.item())
                kept.append((y.cpu().numpy(), torch.sigmoid(logits).detach().cpu().numpy()))
        kept.clear()

    return step, optimizer


class original_settings:
    """Context: PyTorch's default kernel settings (no TF32 matmuls, no cuDNN autotuning), NCHW
    weights, and timm's explicit attention (q @ k^T, softmax, @ v) instead of fused SDPA."""

    def __init__(self, model):
        self.model = model
        self.attn = [m for m in model.modules() if isinstance(getattr(m, "fused_attn", None), bool)]

    def __enter__(self):
        self.saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.benchmark,
                      [m.fused_attn for m in self.attn])
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.benchmark = False
        for m in self.attn:
            m.fused_attn = False
        self.model.to(memory_format=torch.contiguous_format)
        return self

    def __exit__(self, *exc):
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.benchmark, fused = self.saved
        for m, f in zip(self.attn, fused):
            m.fused_attn = f


def forward_flops(model, batch: int, size_hw, device, amp_dtype) -> float:
    """Forward FLOPs of one batch, counted by torch.utils.flop_counter (a small batch, scaled)."""
    from torch.utils.flop_counter import FlopCounterMode

    n = batch if device.type == "cuda" else min(batch, 2)
    x = torch.rand(n, 3, *size_hw, device=device)
    cast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext()
    model.eval()
    with torch.no_grad(), cast, FlopCounterMode(display=False) as counter:
        model(x)
    model.train()
    return counter.get_total_flops() * batch / n


# ----------------------------------------------------------------------------- main
def run(args: argparse.Namespace) -> dict:
    from losses import build_loss
    from models import build_model
    from tools.device import configure_backends, select_amp, select_device
    from tools.engine import build_optimizer, seed_everything
    from tools.engine.build import set_memory_format
    from tools.engine.loop import ModelEma, StepOptions, train_one_epoch
    from tools.evaluation.forward import validate

    logging.basicConfig(level=logging.WARNING, format="%(levelname).1s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = bench_config(args)
    device = select_device(cfg.DEVICE)
    amp_dtype = select_amp(cfg.TRAIN.AMP, device)
    configure_backends(device, cfg.DETERMINISTIC)  # the framework's kernel settings, for both loops
    seed_everything(cfg.SEED)
    data, loaders, data_note = load_data(cfg, device)
    train_loader, val_loader = loaders[cfg.DATASET.TRAIN_SPLIT], loaders[cfg.DATASET.VAL_SPLIT]
    num_attrs = len(data.attr_names)
    size_hw = (cfg.DATASET.HEIGHT, cfg.DATASET.WIDTH)
    B = args.batch_size

    model = set_memory_format(cfg, build_model(cfg, num_attrs).to(device))  # as the trainer does, CPU too
    channels_last = bool(cfg.MODEL.CHANNELS_LAST)
    n_params = sum(p.numel() for p in model.parameters())
    criterion = build_loss(cfg, data.attr_names, data.groups, data.label_priors(cfg.DATASET.TRAIN_SPLIT),
                           model).to(device)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    net = torch.compile(model) if cfg.MODEL.COMPILE else model
    opt_bare = build_optimizer(cfg, model)  # same type and parameter groups as the framework's
    opt_fw = build_optimizer(cfg, model)
    ema = ModelEma(model, cfg.TRAIN.EMA_DECAY) if cfg.TRAIN.EMA else None
    clip = cfg.TRAIN.CLIP_NORM if cfg.TRAIN.CLIP_GRAD else 0.0
    bare = make_bare_step(net, opt_bare, B, num_attrs, size_hw, device, amp_dtype, scaler, channels_last)

    def framework(n: int) -> tuple[int, float]:
        lim = LimitedLoader(train_loader, n)
        opt = StepOptions(device=device, amp_dtype=amp_dtype, scaler=scaler, clip_norm=clip, ema=ema,
                          on_nonfinite=cfg.TRAIN.ON_NONFINITE)
        res = train_one_epoch(net, lim, criterion, opt_fw, opt=opt, log_every=cfg.TRAIN.LOG_EVERY, progress=False)
        return res.images, lim.wait_s

    out: dict = {"config": args.config, "model": cfg.MODEL.NAME, "params_m": n_params / 1e6, "batch_size": B,
                 "input": list(size_hw), "device": str(device), "device_name": _device_name(device),
                 "amp": str(amp_dtype).replace("torch.", "") if amp_dtype else "off", "data": data_note,
                 "num_attrs": num_attrs, "steps": args.steps, "repeats": args.repeats,
                 "threads": torch.get_num_threads(), "optimizer": type(opt_fw).__name__, "clip_norm": clip,
                 "compile": bool(cfg.MODEL.COMPILE)}

    # warm-up: allocations, optimizer state, cudnn autotuning, compilation
    bare(args.warmup)
    framework(args.warmup)
    _sync(device)

    bare_s, fw_s, bare_cpu, fw_cpu, fw_img, fw_wait = [], [], [], [], [], []
    peaks = {"bare": 0.0, "framework": 0.0}

    def run_bare() -> None:
        _reset_peak(device)
        c0 = time.process_time()
        bare_s.append(_timed(device, lambda: bare(args.steps)))
        bare_cpu.append(time.process_time() - c0)
        peaks["bare"] = max(peaks["bare"], _peak_mb(device))

    def run_framework() -> None:
        _reset_peak(device)
        got = {}
        c0 = time.process_time()
        fw_s.append(_timed(device, lambda: got.update(zip(("img", "wait"), framework(args.steps)))))
        fw_cpu.append(time.process_time() - c0)
        fw_img.append(got["img"])
        fw_wait.append(got["wait"])
        peaks["framework"] = max(peaks["framework"], _peak_mb(device))

    for rep in range(args.repeats):  # a b, b a, a b, ...: neither side always runs first
        for fn in (run_bare, run_framework) if rep % 2 == 0 else (run_framework, run_bare):
            fn()
    bare_ips = [B * args.steps / s for s in bare_s]
    fw_ips = [i / s for i, s in zip(fw_img, fw_s)]
    out["bare_images_per_s"] = statistics.median(bare_ips)
    out["framework_images_per_s"] = statistics.median(fw_ips)
    # each (a, b) pair ran back to back, so its ratio is immune to the machine's load drifting
    out["framework_over_bare"] = statistics.median(f / b for f, b in zip(fw_ips, bare_ips))
    out["framework_over_bare_of_medians"] = out["framework_images_per_s"] / out["bare_images_per_s"]
    out["framework_data_wait_ms_per_step"] = 1e3 * statistics.median(fw_wait) / args.steps
    out["runs"] = {"bare_images_per_s": bare_ips, "framework_images_per_s": fw_ips}
    if device.type == "cpu":  # CPU seconds of this process: what other jobs on the machine disturb least
        out["bare_images_per_cpu_s"] = statistics.median(B * args.steps / c for c in bare_cpu)
        out["framework_images_per_cpu_s"] = statistics.median(i / c for i, c in zip(fw_img, fw_cpu))
        out["framework_over_bare_cpu_time"] = out["framework_images_per_cpu_s"] / out["bare_images_per_cpu_s"]
        out["runs"]["bare_cpu_s"], out["runs"]["framework_cpu_s"] = bare_cpu, fw_cpu

    # (c) eval
    ev = LimitedLoader(val_loader, args.eval_batches) if args.eval_batches else val_loader
    eval_ips = []
    _reset_peak(device)
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        probs, *_ = validate(net, ev, criterion, to_probs=torch.sigmoid, device=device, amp_dtype=amp_dtype,
                             progress=False)
        eval_ips.append(len(probs) / (time.perf_counter() - t0))  # validate ends with a host copy: synced
    out["eval_images_per_s"] = statistics.median(eval_ips)
    peaks["eval"] = _peak_mb(device)

    # (d) data path alone: the same batches the framework consumed, nothing else
    data_ips = []
    for _ in range(args.repeats):
        lim = LimitedLoader(train_loader, max(args.steps, 4))
        n_img = [0]

        def drain():
            for x, _, _ in lim:
                n_img[0] += x.shape[0]

        secs = _timed(device, drain)
        data_ips.append(n_img[0] / secs)
    out["data_images_per_s"] = statistics.median(data_ips)
    out["data_over_framework"] = out["data_images_per_s"] / out["framework_images_per_s"]

    # (e) memory; on CUDA each loop's peak leaves out the other loop's optimizer state (both stay allocated)
    if device.type == "cuda":
        peaks["bare"] -= _state_mb(opt_fw)
        peaks["framework"] -= _state_mb(opt_bare)
        out["peak_memory_mb"] = peaks
    else:
        out["peak_memory_mb"] = {"process_max_rss": _peak_mb(device)}

    # FLOPs: a training step costs about 3x the forward
    fwd = forward_flops(model, B, size_hw, device, amp_dtype)
    out["forward_gflops_per_batch"] = fwd / 1e9
    for key in ("bare", "framework"):
        tflops = 3 * fwd / B * out[f"{key}_images_per_s"] / 1e12
        out[f"{key}_tflops"] = tflops
        if device.type == "cuda":
            out[f"{key}_fraction_of_peak"] = tflops / args.peak_tflops
    out["peak_tflops"] = args.peak_tflops

    if args.reference:  # last: it changes the model's memory format and attention path
        del bare, framework, opt_bare, opt_fw  # free their optimizer state for the reference's own Adam
        model.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        with original_settings(model) as orig:
            step, _ = make_reference_step(model, B, num_attrs, size_hw, device, cfg.TRAIN.LR_SCHEDULER.LR_NEW,
                                          cfg.TRAIN.OPTIMIZER.WEIGHT_DECAY, clip)
            step(max(args.warmup, 1))
            ref = [B * args.steps / _timed(device, lambda: step(args.steps)) for _ in range(args.repeats)]
            out["reference_explicit_attention_modules"] = len(orig.attn)
        out["reference_images_per_s"] = statistics.median(ref)
        out["framework_over_reference"] = out["framework_images_per_s"] / out["reference_images_per_s"]
        out["runs"]["reference_images_per_s"] = ref
    return out


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return platform.processor() or platform.machine()


def format_table(r: dict) -> str:
    def row(name: str, value: str, note: str = "") -> str:
        return f"| {name:<34} | {value:>14} | {note}"

    ms = lambda ips: f"{1e3 * r['batch_size'] / ips:.0f} ms/step" if ips else ""  # noqa: E731
    lines = [
        f"{r['model']} ({r['params_m']:.1f} M params), batch {r['batch_size']}, input {r['input'][0]}x{r['input'][1]}, "
        f"{r['device']} ({r['device_name']}, {r['threads']} threads), AMP {r['amp']}, data {r['data']}, "
        f"{r['optimizer']}, clip {r['clip_norm']:g}; medians of {r['repeats']} interleaved runs x {r['steps']} steps",
        row("measurement", "value", "note"),
        "|" + "-" * 36 + "|" + "-" * 16 + "|" + "-" * 30,
        row("(a) bare loop train", f"{r['bare_images_per_s']:.2f} img/s", ms(r["bare_images_per_s"])),
        row("(b) framework train", f"{r['framework_images_per_s']:.2f} img/s",
            f"{ms(r['framework_images_per_s'])}, of which waiting for data "
            f"{r['framework_data_wait_ms_per_step']:.1f} ms"),
        row("(b)/(a) framework vs bare", f"{100 * r['framework_over_bare']:.1f} %",
            f"median of the {r['repeats']} back-to-back pairs (ratio of medians "
            f"{100 * r['framework_over_bare_of_medians']:.1f} %)"),
    ]
    if "framework_over_bare_cpu_time" in r:
        lines.append(row("(b)/(a) by process CPU time", f"{100 * r['framework_over_bare_cpu_time']:.1f} %",
                         f"{r['bare_images_per_cpu_s']:.2f} vs {r['framework_images_per_cpu_s']:.2f} img per CPU-s"))
    lines += [
        row("(c) eval", f"{r['eval_images_per_s']:.2f} img/s", "tools.evaluation.forward.validate"),
        row("(d) data path alone", f"{r['data_images_per_s']:.1f} img/s", "cache + augmentation, no model"),
        row("(d)/(b) data vs training need", f"{r['data_over_framework']:.1f} x", ""),
    ]
    for k, v in r["peak_memory_mb"].items():
        lines.append(row(f"(e) peak memory {k}", f"{v:.0f} MiB", "max allocated (own optimizer state only)" if r["device"].startswith("cuda")
                         else "process max RSS"))
    lines.append(row("forward FLOPs per batch", f"{r['forward_gflops_per_batch']:.1f} GFLOP", "flop_counter"))
    for key in ("bare", "framework"):
        frac = r.get(f"{key}_fraction_of_peak")
        note = f"{100 * frac:.1f} % of {r['peak_tflops']:g} TFLOP/s peak" if frac is not None else "3 x forward"
        lines.append(row(f"achieved ({key})", f"{1e3 * r[f'{key}_tflops']:.1f} GFLOP/s", note))
    if "reference_images_per_s" in r:
        lines.append(row("reference (fp32 + anomaly, syncs)", f"{r['reference_images_per_s']:.2f} img/s",
                         ms(r["reference_images_per_s"])))
        lines.append(row("framework / reference", f"{r['framework_over_reference']:.2f} x", ""))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.steps < 1 or args.repeats < 1 or args.batch_size < 1:
        print("error: --steps, --repeats and --batch-size must be at least 1", file=sys.stderr)
        return 2
    result = run(args)
    print(format_table(result))
    text = json.dumps(result, indent=2, default=float)
    if args.json:
        Path(args.json).write_text(text)
    print(text)
    return 0 if all(math.isfinite(v) for v in (result["bare_images_per_s"], result["framework_images_per_s"])) else 1


if __name__ == "__main__":
    sys.exit(exit_code_of(main))
