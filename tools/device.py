"""The one place that decides the device, AMP mode and distributed set-up."""
from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from yacs.config import CfgNode as CN

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    device: torch.device
    amp_dtype: torch.dtype | None  # None = full precision
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def select_device(spec: str, local_rank: int = 0) -> torch.device:
    if spec == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        from configs.errors import ConfigError

        raise ConfigError(f"DEVICE = {spec!r} but no CUDA device is visible; set DEVICE cpu or auto")
    return device


def select_amp(mode: str, device: torch.device) -> torch.dtype | None:
    """bf16 where the GPU supports it, else fp16 (with a GradScaler); never on CPU."""
    if device.type != "cuda" or mode == "off":
        return None
    if mode == "fp16":
        return torch.float16
    if mode == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def configure_backends(device: torch.device, deterministic: bool = False) -> None:
    """Process-wide kernel settings for training on ``device`` (also used by scripts/benchmark.py)."""
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = not deterministic  # autotuned kernels vary run to run
        torch.backends.cudnn.deterministic = deterministic
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls/convs on tensor cores
        torch.backends.cudnn.allow_tf32 = True
    else:
        # Tiny gradients and Adam's squared-gradient averages drift into denormal floats after a few
        # steps; x86 handles those in microcode, ~1.5x slower CPU steps. Flushing them to zero
        # changes nothing measurable (they are < 1.2e-38).
        torch.set_flush_denormal(True)


def setup_runtime(cfg: CN) -> Runtime:
    """Read torchrun's environment (if any), pick the device, init the process group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = select_device(cfg.DEVICE, local_rank)
    configure_backends(device, cfg.DETERMINISTIC)
    if world > 1 and not dist.is_initialized():
        backend = cfg.DIST.BACKEND if cfg.DIST.BACKEND != "auto" else ("nccl" if device.type == "cuda" else "gloo")
        dist.init_process_group(backend=backend)
    return Runtime(device, select_amp(cfg.TRAIN.AMP, device), rank, world, local_rank)


def gather_arrays(rt: Runtime, *arrays):
    """Concatenate numpy arrays from every rank (eval results are small)."""
    if not rt.distributed:
        return arrays
    out = [None] * rt.world
    dist.all_gather_object(out, arrays)
    import numpy as np

    return tuple(np.concatenate([o[i] for o in out]) for i in range(len(arrays)))


def mean_across_ranks(rt: Runtime, values: list[float], weights: list[float] | None = None) -> list[float]:
    """Weighted mean of per-rank scalars (e.g. a shard's mean loss weighted by its image count)."""
    if not rt.distributed:
        return list(values)
    w = [1.0] * len(values) if weights is None else [float(x) for x in weights]
    t = torch.tensor([v * x for v, x in zip(values, w)] + w, dtype=torch.float64)
    if rt.device.type == "cuda":  # NCCL reduces device tensors only
        t = t.to(rt.device)
    dist.all_reduce(t)
    t = t.cpu()
    n = len(values)
    return [float(t[i] / max(float(t[n + i]), 1e-12)) for i in range(n)]


def broadcast_from_main(rt: Runtime, obj):
    """Rank 0's value on every rank (a decision only rank 0 can take, such as 'the folder is taken')."""
    if not rt.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(rt: Runtime) -> None:
    """Wait until every rank gets here (e.g. before reading a file rank 0 writes)."""
    if rt.distributed:
        dist.barrier()


def autocast(device: torch.device, amp_dtype: torch.dtype | None):
    """The AMP context for ``amp_dtype`` on ``device`` (a no-op context for full precision)."""
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp_dtype)


def on_every_rank(flag: torch.Tensor) -> torch.Tensor:
    """Under DDP, True only where it is True on every rank (an all-reduce, no host sync)."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return flag
    agreed = flag.to(torch.int32)
    dist.all_reduce(agreed, op=dist.ReduceOp.MIN)
    return agreed.bool()
