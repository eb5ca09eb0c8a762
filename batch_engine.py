"""One training epoch and one evaluation pass. Everything else (data, model, results) is built
elsewhere and passed in; the device was decided once by the caller.

No host-device sync happens per step: the loss is accumulated on the device and read at
``log_every`` intervals (on CPU, where a sync costs nothing, every step is checked).
"""
from __future__ import annotations

import contextlib
import copy
import logging
import signal
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from configs.errors import UserError

log = logging.getLogger(__name__)


class NonFiniteLoss(UserError, RuntimeError):
    """The loss became NaN/inf and TRAIN.ON_NONFINITE is 'stop'."""


class StopRequest:
    """Turns SIGINT/SIGTERM into a flag the loop checks after each step (finish the step, save, exit)."""

    def __init__(self):
        self.signum: int | None = None
        self._old = {}

    def __enter__(self) -> "StopRequest":
        for s in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[s] = signal.signal(s, self._handle)
            except ValueError:  # not the main thread (e.g. inside some test runners)
                pass
        return self

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:  # second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.signum = signum
        log.warning("%s received: finishing the current step, then saving last.pth",
                    signal.Signals(signum).name)

    def __exit__(self, *exc) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)

    @property
    def requested(self) -> bool:
        return self.signum is not None


class ModelEma(nn.Module):
    """Exponential moving average of the weights (buffers copied), evaluated instead of the model."""

    def __init__(self, model: nn.Module, decay: float):
        super().__init__()
        self.module = copy.deepcopy(model).eval()
        self.decay = decay
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        ema_p = [p for p in self.module.state_dict().values() if p.dtype.is_floating_point]
        cur_p = [p for p in model.state_dict().values() if p.dtype.is_floating_point]
        torch._foreach_lerp_(ema_p, cur_p, 1.0 - self.decay)


@dataclass
class EpochResult:
    loss: float = 0.0
    steps: int = 0
    images: int = 0
    seconds: float = 0.0
    skipped_steps: int = 0
    interrupted: bool = False
    parts: dict = field(default_factory=dict)
    last_step: int = 0  # batches of the epoch consumed so far (where a mid-epoch resume starts)
    loss_sum: float = 0.0  # the float32 running sum, kept exactly so a resumed epoch reports the same mean

    @property
    def images_per_s(self) -> float:
        return self.images / max(self.seconds, 1e-9)

    def carry(self) -> dict:
        """The running totals of an interrupted epoch (saved in last.pth, passed back as ``carry``)."""
        return {"loss_sum": self.loss_sum, "steps": self.steps, "images": self.images, "seconds": self.seconds,
                "skipped_steps": self.skipped_steps, "parts": dict(self.parts)}


def autocast(device: torch.device, amp_dtype: torch.dtype | None):
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp_dtype)


def _on_every_rank(flag: torch.Tensor) -> torch.Tensor:
    """Under DDP, True only where it is True on every rank (an all-reduce, no host sync)."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return flag
    agreed = flag.to(torch.int32)
    dist.all_reduce(agreed, op=dist.ReduceOp.MIN)
    return agreed.bool()


@dataclass
class StepOptions:
    """How one optimisation step runs (everything but the batch and the modules)."""

    device: torch.device
    amp_dtype: torch.dtype | None = None
    scaler: torch.amp.GradScaler | None = None
    clip_norm: float = 0.0
    ema: ModelEma | None = None
    on_nonfinite: str = "stop"


def _optimise(model: nn.Module, loss: torch.Tensor, optimizer: torch.optim.Optimizer, opt: StepOptions,
              params: list[torch.Tensor]) -> None:
    """Backward, clip, step (with the GradScaler under fp16 AMP), EMA update."""
    optimizer.zero_grad(set_to_none=True)
    if opt.scaler is not None:
        opt.scaler.scale(loss).backward()
        opt.scaler.unscale_(optimizer)
    else:
        loss.backward()
    if opt.clip_norm > 0:
        torch.nn.utils.clip_grad_norm_(params, opt.clip_norm, foreach=True)
    if opt.scaler is not None:
        opt.scaler.step(optimizer)
        opt.scaler.update()
    else:
        optimizer.step()
    if opt.ema is not None:
        opt.ema.update(model)


def _stop_on_nonfinite(msg: str) -> NonFiniteLoss:
    return NonFiniteLoss(msg + "; the last good checkpoint is kept (lower the LR or set TRAIN.ON_NONFINITE skip)")


def _start(carry: dict | None, device: torch.device) -> tuple[EpochResult, dict, torch.Tensor]:
    """An epoch's running totals, from zero or from an interrupted epoch's ``carry``."""
    carry = carry or {}
    res = EpochResult(steps=carry.get("steps", 0), images=carry.get("images", 0),
                      skipped_steps=carry.get("skipped_steps", 0), seconds=carry.get("seconds", 0.0))
    loss_sum = torch.tensor(carry.get("loss_sum", 0.0), dtype=torch.float32, device=device)
    return res, dict(carry.get("parts", {})), loss_sum


def _finish(res: EpochResult, parts: dict, loss_sum: torch.Tensor, t0: float, epoch: int) -> EpochResult:
    if res.steps == 0 and res.skipped_steps and not res.interrupted:
        raise NonFiniteLoss(f"every step of epoch {epoch} had a non-finite loss ({res.skipped_steps} skipped): "
                            "the weights have diverged; lower the LR and restart from the last good checkpoint")
    res.seconds += time.perf_counter() - t0
    res.loss_sum = loss_sum.item()
    res.loss = res.loss_sum / max(res.steps, 1)
    res.parts = {k: float(v) for k, v in parts.items()}
    return res


def train_one_epoch(model: nn.Module, loader, criterion: nn.Module, optimizer: torch.optim.Optimizer, *,
                    opt: StepOptions, epoch: int = 0, log_every: int = 20, stop: StopRequest | None = None,
                    start_step: int = 0, carry: dict | None = None, progress: bool = True,
                    on_step: Callable[[int], None] | None = None) -> EpochResult:
    """Train one epoch; returns its mean loss and speed. Stops early (``interrupted``) on a stop request.

    A mid-epoch resume passes ``start_step`` (batches already done) and ``carry`` (the interrupted
    epoch's ``EpochResult.carry()``), so the epoch's totals equal an uninterrupted epoch's."""
    model.train()
    criterion.train()
    res, parts, loss_sum = _start(carry, opt.device)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    pending_bad = torch.zeros((), device=opt.device, dtype=torch.int64)
    sync_every_step = opt.device.type == "cpu" or opt.on_nonfinite == "skip"  # a CPU sync costs nothing
    bar = tqdm(loader, desc=f"epoch {epoch} train", leave=False, disable=None if progress else True, mininterval=1.0,
               dynamic_ncols=True)
    t0, step = time.perf_counter(), start_step
    for x, y, _ in bar:
        with autocast(opt.device, opt.amp_dtype):
            out = model(x)  # logits (PAR), or a dict (TASK reid / multitask) that its criterion casts
            loss, step_parts = criterion(out.float() if torch.is_tensor(out) else out, y)
        finite = _on_every_rank(torch.isfinite(loss))  # DDP ranks must all skip/stop together, or they hang
        step += 1
        if sync_every_step and not bool(finite):
            if opt.on_nonfinite == "stop":
                raise _stop_on_nonfinite(f"non-finite loss ({loss.item()}) at epoch {epoch}, step {step - 1}")
            log.warning("non-finite loss (%s) at epoch %d, step %d: step skipped", loss.item(), epoch, step - 1)
            res.skipped_steps += 1
            optimizer.zero_grad(set_to_none=True)
            continue
        parts = step_parts  # the reported parts are those of the last step that was not skipped
        _optimise(model, loss, optimizer, opt, params)
        loss_sum += loss.detach()
        pending_bad += (~finite).long()
        res.steps += 1
        res.images += x.shape[0]
        if on_step is not None:  # the trainer's after-step hooks
            on_step(step)
        if res.steps % log_every == 0:
            if int(pending_bad):
                raise _stop_on_nonfinite(f"non-finite loss at epoch {epoch} between steps {step - log_every} and {step}")
            bar.set_postfix(loss=f"{loss_sum.item() / res.steps:.4f}",
                            img_s=f"{res.images / (time.perf_counter() - t0):.1f}")
        if stop is not None and stop.requested:
            res.interrupted = True
            break
    if int(pending_bad):
        raise _stop_on_nonfinite(f"non-finite loss during epoch {epoch}")
    res.last_step = getattr(loader, "position", step)  # the loader also counts batches it dropped as unreadable
    return _finish(res, parts, loss_sum, t0, epoch)


@torch.inference_mode()
def validate(model: nn.Module, loader, criterion: nn.Module, *, to_probs: Callable[[torch.Tensor], torch.Tensor],
             device: torch.device, amp_dtype: torch.dtype | None = None, desc: str = "eval",
             progress: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Returns (probabilities, labels, row indices, mean loss) over the loader; ``to_probs`` maps
    logits to probabilities (an inference contract's ``ProbabilityHead``)."""
    model.eval()
    criterion.eval()
    probs, labels, rows = [], [], []
    loss_sum = torch.zeros((), device=device)
    n = 0
    for x, y, idx in tqdm(loader, desc=desc, leave=False, disable=None if progress else True, mininterval=1.0):
        with autocast(device, amp_dtype):
            logits = model(x).float()
        loss, _ = criterion(logits, y)
        loss_sum += loss * x.shape[0]
        n += x.shape[0]
        probs.append(to_probs(logits))  # kept on the device: no sync per batch
        labels.append(y)
        rows.append(idx)
    return (torch.cat(probs).cpu().numpy(), torch.cat(labels).cpu().numpy(), torch.cat(rows).numpy(),
            loss_sum.item() / max(n, 1))
