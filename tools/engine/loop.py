"""The step loop: one training epoch, whatever a step computes (``run_epoch`` over an ``EpochTask``).

``train_one_epoch`` is the supervised task (model -> criterion -> optimiser); stage 2
(``tools.engine.stage2``) is another task over the same loop. ``EpochTally`` keeps an epoch's running
totals; a mid-epoch resume starts it from ``EpochResult.carry()``.

No host-device sync happens per step: the loss is accumulated on the device and read at
``log_every`` intervals (on CPU, where a sync costs nothing, every step is checked).
"""
from __future__ import annotations

import copy
import logging
import signal
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

import torch
from torch import nn
from tqdm import tqdm

from configs.errors import UserError
from tools.device import autocast, on_every_rank

log = logging.getLogger(__name__)


class NonFiniteLoss(UserError, RuntimeError):
    """The loss became NaN/inf and TRAIN.ON_NONFINITE is 'stop'."""


def nonfinite_error(msg: str) -> NonFiniteLoss:
    """The error TRAIN.ON_NONFINITE stop raises, with the way out."""
    return NonFiniteLoss(msg + "; the last good checkpoint is kept (lower the LR or set TRAIN.ON_NONFINITE skip)")


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


class EpochTally:
    """An epoch's running totals: host counters in ``res``, the loss sum and the count of non-finite
    steps not yet checked on the device. Starts from zero or from an interrupted epoch's ``carry``."""

    def __init__(self, device: torch.device, carry: dict | None = None):
        carry = carry or {}
        self.res = EpochResult(steps=carry.get("steps", 0), images=carry.get("images", 0),
                               skipped_steps=carry.get("skipped_steps", 0), seconds=carry.get("seconds", 0.0))
        self.parts = dict(carry.get("parts", {}))
        self.loss_sum = torch.tensor(carry.get("loss_sum", 0.0), dtype=torch.float32, device=device)
        self.pending_bad = torch.zeros((), device=device, dtype=torch.int64)
        self.t0 = time.perf_counter()

    def add(self, loss: torch.Tensor, finite: torch.Tensor, parts: dict, images: int) -> None:
        """A step that was taken (its non-finiteness, if any, is read at the next ``check``)."""
        self.parts = parts  # the reported parts are those of the last step that was not skipped
        self.loss_sum += loss.detach()
        self.pending_bad += (~finite).long()
        self.res.steps += 1
        self.res.images += images

    def check(self, where: str) -> None:
        """Raise ``NonFiniteLoss`` if a step since the last check had a non-finite loss (one host sync)."""
        if int(self.pending_bad):
            raise nonfinite_error(f"non-finite loss {where}")

    def postfix(self) -> dict[str, str]:
        """The progress bar's running mean loss and speed (one host sync)."""
        return {"loss": f"{self.loss_sum.item() / max(self.res.steps, 1):.4f}",
                "img_s": f"{self.res.images / max(time.perf_counter() - self.t0, 1e-9):.1f}"}

    def finish(self, epoch: int, last_step: int) -> EpochResult:
        """The epoch's result; every step non-finite (and skipped) means the weights have diverged."""
        res = self.res
        if res.steps == 0 and res.skipped_steps and not res.interrupted:
            raise NonFiniteLoss(f"every step of epoch {epoch} had a non-finite loss ({res.skipped_steps} skipped): "
                                "the weights have diverged; lower the LR and restart from the last good checkpoint")
        res.last_step = last_step
        res.seconds += time.perf_counter() - self.t0
        res.loss_sum = self.loss_sum.item()
        res.loss = res.loss_sum / max(res.steps, 1)
        res.parts = {k: float(v) for k, v in self.parts.items()}
        return res


class EpochTask(Protocol):
    """What one step computes and updates; ``run_epoch`` does the rest."""

    def before_step(self, step: int) -> None: ...

    def losses(self, x: torch.Tensor, y) -> tuple[torch.Tensor, dict]: ...

    def optimise(self, loss: torch.Tensor) -> None: ...

    def skip(self) -> None: ...


@dataclass
class StepOptions:
    """How one optimisation step runs (everything but the batch and the modules)."""

    device: torch.device
    amp_dtype: torch.dtype | None = None
    scaler: torch.amp.GradScaler | None = None
    clip_norm: float = 0.0
    ema: ModelEma | None = None
    on_nonfinite: str = "stop"


@dataclass
class EpochOptions:
    """Where one epoch starts and how it reports (everything but the task and the loader)."""

    epoch: int = 0
    log_every: int = 20
    stop: StopRequest | None = None
    start_step: int = 0
    carry: dict | None = None
    progress: bool = True
    desc: str = "train"
    log_every_s: float = 60.0  # without a terminal: a progress line in the log this often
    on_step: Callable[[int], None] | None = None  # after each step taken (tests, per-step probes)


class LogProgress:
    """Where the progress bar is off (output is a log file, not a terminal), a log line every
    ``every_s`` seconds instead: step of the epoch, running loss, speed and time left."""

    def __init__(self, bar: tqdm, every_s: float):
        self.on = bool(bar.disable)
        self.every_s, self.total = every_s, bar.total  # tqdm's len(loader), None for a loader without one
        self.t_last = time.perf_counter()

    def maybe_log(self, eo: "EpochOptions", step: int, tally: EpochTally) -> None:
        now = time.perf_counter()
        if not self.on or now - self.t_last < self.every_s:
            return
        self.t_last = now
        done = step - eo.start_step
        post = tally.postfix()
        where = f"step {step}/{self.total}" if self.total else f"step {step}"
        eta = ""
        if self.total and done > 0:
            per_step = (now - tally.t0) / done
            eta = f", ~{(self.total - step) * per_step / 60:.1f} min left in the epoch"
        log.info("epoch %d %s: %s, loss %s, %s img/s%s", eo.epoch, eo.desc, where, post["loss"], post["img_s"], eta)


def _skip_or_stop(task: EpochTask, tally: EpochTally, loss: torch.Tensor, opt: StepOptions, where: str) -> None:
    """A step with a non-finite loss: stop (TRAIN.ON_NONFINITE stop) or skip it with a warning."""
    if opt.on_nonfinite == "stop":
        raise nonfinite_error(f"non-finite loss ({loss.item()}) at {where}")
    log.warning("non-finite loss (%s) at %s: step skipped", loss.item(), where)
    tally.res.skipped_steps += 1
    task.skip()


def run_epoch(loader, task: EpochTask, opt: StepOptions, eo: EpochOptions) -> EpochResult:
    """Run ``task`` over one epoch of ``loader``; stops early (``interrupted``) on a stop request."""
    tally = EpochTally(opt.device, eo.carry)
    sync_every_step = opt.device.type == "cpu" or opt.on_nonfinite == "skip"  # a CPU sync costs nothing
    bar = tqdm(loader, desc=f"epoch {eo.epoch} {eo.desc}", leave=False, disable=None if eo.progress else True,
               mininterval=1.0, dynamic_ncols=True)
    plain = LogProgress(bar, eo.log_every_s) if eo.progress else None
    step = eo.start_step
    for x, y, _ in bar:
        task.before_step(step)
        loss, parts = task.losses(x, y)
        finite = on_every_rank(torch.isfinite(loss))  # DDP ranks must all skip/stop together, or they hang
        step += 1
        if sync_every_step and not bool(finite):
            _skip_or_stop(task, tally, loss, opt, f"epoch {eo.epoch}, step {step - 1}")
            continue
        task.optimise(loss)
        tally.add(loss, finite, parts, x.shape[0])
        if eo.on_step is not None:
            eo.on_step(step)
        if tally.res.steps % eo.log_every == 0:
            tally.check(f"at epoch {eo.epoch} between steps {step - eo.log_every} and {step}")
            bar.set_postfix(**tally.postfix())
        if plain is not None:
            plain.maybe_log(eo, step, tally)
        if eo.stop is not None and eo.stop.requested:
            tally.res.interrupted = True
            break
    tally.check(f"during epoch {eo.epoch}")
    # the loader also counts batches it dropped as unreadable
    return tally.finish(eo.epoch, getattr(loader, "position", step))


def optimise(loss: torch.Tensor, optimizers: list[torch.optim.Optimizer], opt: StepOptions, *,
             model: nn.Module | None = None, reduce: Callable[[list[torch.Tensor]], None] | None = None) -> None:
    """One backward; per optimiser: ``reduce`` its gradients (stage 2's hand-made DDP average), unscale
    (fp16 GradScaler), clip, step; then the scaler's update and the EMA of ``model``."""
    for o in optimizers:
        o.zero_grad(set_to_none=True)
    (opt.scaler.scale(loss) if opt.scaler is not None else loss).backward()
    for o in optimizers:
        params = [p for g in o.param_groups for p in g["params"]]
        if reduce is not None:
            reduce(params)
        if opt.scaler is not None:
            opt.scaler.unscale_(o)
        if opt.clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, opt.clip_norm, foreach=True)
        if opt.scaler is not None:
            opt.scaler.step(o)
        else:
            o.step()
    if opt.scaler is not None:
        opt.scaler.update()
    if opt.ema is not None and model is not None:
        opt.ema.update(model)


class SupervisedTask:
    """The plain step: model -> criterion -> backward/clip/step/EMA of one optimiser."""

    def __init__(self, model: nn.Module, criterion: nn.Module, optimizer: torch.optim.Optimizer, opt: StepOptions):
        self.model, self.criterion, self.optimizer, self.opt = model, criterion, optimizer, opt

    def before_step(self, step: int) -> None:
        pass

    def losses(self, x: torch.Tensor, y) -> tuple[torch.Tensor, dict]:
        with autocast(self.opt.device, self.opt.amp_dtype):
            out = self.model(x)  # logits (PAR), or a dict (TASK reid / multitask) that its criterion casts
            return self.criterion(out.float() if torch.is_tensor(out) else out, y)

    def optimise(self, loss: torch.Tensor) -> None:
        optimise(loss, [self.optimizer], self.opt, model=self.model)

    def skip(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)


def train_one_epoch(model: nn.Module, loader, criterion: nn.Module, optimizer: torch.optim.Optimizer, *,
                    opt: StepOptions, epoch: int = 0, log_every: int = 20, stop: StopRequest | None = None,
                    start_step: int = 0, carry: dict | None = None, progress: bool = True,
                    on_step: Callable[[int], None] | None = None) -> EpochResult:
    """Train one epoch; returns its mean loss and speed. Stops early (``interrupted``) on a stop request.

    A mid-epoch resume passes ``start_step`` (batches already done) and ``carry`` (the interrupted
    epoch's ``EpochResult.carry()``), so the epoch's totals equal an uninterrupted epoch's."""
    model.train()
    criterion.train()
    eo = EpochOptions(epoch=epoch, log_every=log_every, stop=stop, start_step=start_step, carry=carry,
                      progress=progress, on_step=on_step)
    return run_epoch(loader, SupervisedTask(model, criterion, optimizer, opt), opt, eo)
