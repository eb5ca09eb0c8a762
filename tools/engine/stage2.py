"""Label-balanced stage 2 (TRAIN.STAGE2 frdl | goat | frdl_goat; ICML 2024) as a Trainer subclass.

It starts from a MODEL.HEAD split stage-1 run (RELOAD): the model's ``head.classifier`` becomes the new
heads, the stage-1 heads are kept frozen beside it (``LabelBalanced``). The whole of stage 2 runs with
the model in eval mode (BatchNorm statistics frozen). Each step:

1. z = model.forward_attr_features(x), (B, N, C); with gradients only while GOAT trains the extractor.
2. GOAT: the stage-1 heads' element BCE on z. Epoch 0 records the flood levels b_j^y; from epoch 1 the
   extractor (backbone + split) descends the flooding loss at STAGE2.EXTRACTOR_LR, and is reset to the
   in-memory stage-1 copy (with its optimiser state) every STAGE2.RESET_EVERY steps and after every
   epoch, so validation and best_model.pth see the stage-1 extractor with the new heads.
3. FRDL: z (detached) enters the banks; from epoch STAGE2.NUMBER the new heads see bank draws
   (each attribute's label ~ Bernoulli(STAGE2.POS_PROB)) instead of the batch.
4. The new heads: the run's plain BCE on those features, at LR_NEW with the run's LR schedule.

Under DDP the model is not wrapped: the gradients of both optimisers are averaged by hand (the new
heads never see the forward pass DDP would hook), the flood levels are summed over the ranks.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass

import torch
from tqdm import tqdm

from batch_engine import (
    EpochResult,
    StepOptions,
    StopRequest,
    _finish,
    _on_every_rank,
    _start,
    _stop_on_nonfinite,
    autocast,
)
from configs.errors import ConfigError
from losses import build_loss
from losses.flooding import elementwise_bce, flood_levels_of, flooding_loss
from models import build_model
from tools.engine.build import build_scheduler, oom_error, place_model, reload_weights
from tools.engine.label_balanced import NEW_HEADS, LabelBalanced
from tools.engine.trainer import Trainer
from tools.evaluation.evaluator import ContractScorer
from tools.inference.contract import contract_for_run

log = logging.getLogger("train")


@dataclass
class Stage2Options:
    step: StepOptions
    number: int = 3  # STAGE2.NUMBER
    pos_prob: float = 0.5  # STAGE2.POS_PROB
    reset_every: int = 50  # STAGE2.RESET_EVERY (the original's 50)
    sizesum: bool = True  # LOSS.SIZESUM, for the flooding loss


def average_gradients(params: list[torch.Tensor]) -> None:
    """Under DDP: every rank's gradients replaced by their mean (one all-reduce); else nothing."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def _optimizer(cfg, params: list[torch.Tensor], lr: float, name: str) -> torch.optim.Optimizer:
    """TRAIN.OPTIMIZER over one parameter group (fused on CUDA and CPU, as ``build_optimizer``)."""
    o = cfg.TRAIN.OPTIMIZER
    groups = [{"params": params, "lr": lr, "name": name}]
    extra = {"fused": True} if params[0].device.type in ("cuda", "cpu") else {"foreach": True}
    if o.TYPE == "sgd":
        return torch.optim.SGD(groups, momentum=o.MOMENTUM, weight_decay=o.WEIGHT_DECAY, **extra)
    cls = torch.optim.Adam if o.TYPE == "adam" else torch.optim.AdamW
    return cls(groups, weight_decay=o.WEIGHT_DECAY, **extra)


def stage2_optimizers(cfg, model: torch.nn.Module, goat: bool):
    """(new heads at LR_NEW, extractor at STAGE2.EXTRACTOR_LR or None): GOAT trains what FINETUNE.MODE
    left trainable of the extractor; everything else is frozen."""
    heads = list(model.head.classifier.parameters())
    extractor = [p for n, p in model.named_parameters() if not n.startswith(NEW_HEADS) and p.requires_grad]
    extractor = extractor if goat else []
    keep = {id(p) for p in heads + extractor}
    for p in model.parameters():
        p.requires_grad_(id(p) in keep)
    if goat and not extractor:
        raise ConfigError(f"TRAIN.STAGE2 {cfg.TRAIN.STAGE2}: GOAT trains the extractor, but FINETUNE.MODE "
                          f"{cfg.FINETUNE.MODE} freezes all of it; use FINETUNE.MODE full (or partial)")
    ext_opt = _optimizer(cfg, extractor, cfg.STAGE2.EXTRACTOR_LR, "extractor") if extractor else None
    return _optimizer(cfg, heads, cfg.TRAIN.LR_SCHEDULER.LR_NEW, "head"), ext_opt


class Stage2Loop:
    """One stage-2 epoch over a loader (``run``), the per-step losses and updates, and the GOAT reset."""

    def __init__(self, model, lb: LabelBalanced, criterion, optimizers: tuple, opts: Stage2Options):
        self.model, self.lb, self.criterion, self.opts = model, lb, criterion, opts
        self.head_opt, self.ext_opt = optimizers

    def goat_on(self, epoch: int) -> bool:
        """GOAT trains the extractor from epoch 1 (epoch 0 records the flood levels)."""
        return self.lb.goat and epoch >= 1

    def reset(self) -> None:
        """The extractor back to the stage-1 weights bit for bit, and its optimiser state cleared."""
        if self.lb.snapshot is not None:
            self.lb.snapshot.restore(self.model)
            if self.ext_opt is not None:
                self.ext_opt.state.clear()

    def end_epoch(self, epoch: int) -> None:
        """After a completed epoch, before validation: flood levels (epoch 0), then the reset."""
        if not self.lb.goat:
            return
        if epoch == 0:
            b = self.lb.flood.finalize()
            log.info("GOAT flood levels (mean stage-1 loss per attribute): negatives %.4f-%.4f, positives "
                     "%.4f-%.4f", b[:, 0].min(), b[:, 0].max(), b[:, 1].min(), b[:, 1].max())
        self.reset()

    def losses(self, x: torch.Tensor, y: torch.Tensor, epoch: int) -> tuple[torch.Tensor, dict]:
        """(flooding loss of the stage-1 heads + BCE of the new heads, their detached parts)."""
        lb, o = self.lb, self.opts
        dev, amp = o.step.device, o.step.amp_dtype
        with autocast(dev, amp), torch.set_grad_enabled(self.goat_on(epoch)):
            z = self.model.forward_attr_features(x)
            stage1 = lb.stage1_heads(z) if lb.goat else None
        y = y.to(z.device, torch.float32)
        known, total, parts = y >= 0, torch.zeros((), device=z.device), {}
        if lb.goat:
            ell = elementwise_bce(stage1, y > 0.5)
            if epoch == 0:
                lb.flood.record(ell.detach(), y, known)
            else:
                total = flooding_loss(ell, flood_levels_of(lb.flood.levels, y), known, o.sizesum)
            parts["flood"] = total.detach()
        feats, labels = z.detach().float(), y
        if lb.frdl:
            lb.banks.push(feats, y)
            if epoch >= o.number:
                feats, labels = lb.banks.draw(len(feats), o.pos_prob, lb.gen)
        with autocast(dev, amp):
            logits = self.model.head.classifier(feats)
        head_loss, head_parts = self.criterion(logits.float(), labels)
        return total + head_loss, {**head_parts, **parts}

    def optimise(self, loss: torch.Tensor, epoch: int) -> None:
        """One backward; per optimiser: DDP average, unscale (fp16), clip, step."""
        so = self.opts.step
        opts = [self.head_opt] + ([self.ext_opt] if self.goat_on(epoch) else [])
        for opt in opts:
            opt.zero_grad(set_to_none=True)
        (so.scaler.scale(loss) if so.scaler is not None else loss).backward()
        for opt in opts:
            params = [p for g in opt.param_groups for p in g["params"]]
            average_gradients(params)
            if so.scaler is not None:
                so.scaler.unscale_(opt)
            if so.clip_norm > 0:
                torch.nn.utils.clip_grad_norm_(params, so.clip_norm, foreach=True)
            if so.scaler is not None:
                so.scaler.step(opt)
            else:
                opt.step()
        if so.scaler is not None:
            so.scaler.update()

    def run(self, loader, *, epoch: int, stop: StopRequest | None = None, start_step: int = 0,
            carry: dict | None = None, log_every: int = 20, progress: bool = True) -> EpochResult:
        """Train one stage-2 epoch; the result (and a mid-epoch ``carry``) as ``train_one_epoch``'s."""
        so = self.opts.step
        self.model.eval()  # BatchNorm statistics frozen, no dropout: the whole of stage 2
        res, parts, loss_sum = _start(carry, so.device)
        pending_bad = torch.zeros((), device=so.device, dtype=torch.int64)
        sync_every_step = so.device.type == "cpu" or so.on_nonfinite == "skip"
        bar = tqdm(loader, desc=f"epoch {epoch} stage 2", leave=False, disable=None if progress else True,
                   mininterval=1.0, dynamic_ncols=True)
        t0, step = time.perf_counter(), start_step
        for x, y, _ in bar:
            if self.goat_on(epoch) and step % self.opts.reset_every == 0:
                self.reset()
            loss, step_parts = self.losses(x, y, epoch)
            finite = _on_every_rank(torch.isfinite(loss))
            step += 1
            if sync_every_step and not bool(finite):
                if so.on_nonfinite == "stop":
                    raise _stop_on_nonfinite(f"non-finite loss ({loss.item()}) at epoch {epoch}, step {step - 1}")
                log.warning("non-finite loss at epoch %d, step %d: step skipped", epoch, step - 1)
                res.skipped_steps += 1
                continue
            parts = step_parts
            self.optimise(loss, epoch)
            loss_sum += loss.detach()
            pending_bad += (~finite).long()
            res.steps += 1
            res.images += x.shape[0]
            if res.steps % log_every == 0:
                if int(pending_bad):
                    raise _stop_on_nonfinite(f"non-finite loss at epoch {epoch} before step {step}")
                bar.set_postfix(loss=f"{loss_sum.item() / res.steps:.4f}")
            if stop is not None and stop.requested:
                res.interrupted = True
                break
        if int(pending_bad):
            raise _stop_on_nonfinite(f"non-finite loss during epoch {epoch}")
        res.last_step = getattr(loader, "position", step)
        return _finish(res, parts, loss_sum, t0, epoch)


class Stage2Trainer(Trainer):
    """``Trainer`` whose model, optimisers and epochs are stage 2's; hooks, validation, checkpoints, the
    metrics files and resume are the Trainer's (last.pth adds ``extractor_optimizer`` and ``stage2``)."""

    def _build_model(self) -> None:
        cfg, rt, data = self.cfg, self.rt, self.data
        self.model = build_model(cfg, len(data.attr_names))
        reload_weights(cfg, self.model, data.attr_names)
        place_model(cfg, self.model, dataclasses.replace(rt, world=1))  # device and memory format, no DDP wrapper
        self.net, self.ema = self.model, None
        self.criterion = build_loss(cfg, data.attr_names, data.groups, data.label_priors(self.train_split),
                                    self.model).to(rt.device)
        self.lb = LabelBalanced(self.model, cfg.TRAIN.STAGE2, cfg.STAGE2.BANK_SIZE, cfg.SEED + rt.rank)
        self.optimizer, self.extractor_optimizer = stage2_optimizers(cfg, self.model, self.lb.goat)
        self.scheduler = build_scheduler(cfg, self.optimizer)
        self.scaler = torch.amp.GradScaler("cuda") if rt.amp_dtype == torch.float16 else None
        self.contract = contract_for_run(cfg, data, self.model, self.criterion, list(self.loaders))
        self.scorer = ContractScorer(self.contract, rt.device)
        step = StepOptions(device=rt.device, amp_dtype=rt.amp_dtype, scaler=self.scaler,
                           clip_norm=cfg.TRAIN.CLIP_NORM if cfg.TRAIN.CLIP_GRAD else 0.0,
                           on_nonfinite=cfg.TRAIN.ON_NONFINITE)
        s = cfg.STAGE2
        self.loop = Stage2Loop(self.model, self.lb, self.criterion, (self.optimizer, self.extractor_optimizer),
                               Stage2Options(step, s.NUMBER, s.POS_PROB, s.RESET_EVERY, cfg.LOSS.SIZESUM))
        if self.lb.frdl and s.NUMBER >= cfg.TRAIN.MAX_EPOCH:
            log.warning("STAGE2.NUMBER %d >= TRAIN.MAX_EPOCH %d: FRDL never re-samples", s.NUMBER, cfg.TRAIN.MAX_EPOCH)
        log.info("stage 2 %s: new heads at LR %g%s", cfg.TRAIN.STAGE2, cfg.TRAIN.LR_SCHEDULER.LR_NEW,
                 f"; GOAT extractor at LR {s.EXTRACTOR_LR:g}, reset every {s.RESET_EVERY} steps" if self.lb.goat
                 else "; extractor frozen")

    def _modules(self) -> dict:
        return {**super()._modules(), "extractor_optimizer": self.extractor_optimizer, "stage2": self.lb}

    def _train_epoch(self, epoch: int, stop: StopRequest) -> EpochResult:
        cfg, rt = self.cfg, self.rt
        loader = self.loaders[self.train_split]
        loader.set_epoch(epoch, self.state.step)
        try:
            res = self.loop.run(loader, epoch=epoch, stop=stop, start_step=self.state.step, carry=self.state.partial,
                                log_every=cfg.TRAIN.LOG_EVERY, progress=rt.is_main)
        except torch.cuda.OutOfMemoryError:
            raise oom_error("TRAIN.BATCH_SIZE", cfg.TRAIN.BATCH_SIZE) from None
        if not res.interrupted:
            self.loop.end_epoch(epoch)
        return res
