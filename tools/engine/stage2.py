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
from dataclasses import dataclass

import torch

from configs.errors import ConfigError
from losses.flooding import elementwise_bce, flood_levels_of, flooding_loss
from models import build_model
from tools.device import autocast
from tools.engine.build import oom_error, optimizer_over, place_model, reload_weights
from tools.engine.label_balanced import NEW_HEADS, LabelBalanced
from tools.engine.loop import EpochOptions, EpochResult, StepOptions, StopRequest, optimise, run_epoch
from tools.engine.trainer import Trainer

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
    ext_opt = (optimizer_over(cfg, [{"params": extractor, "lr": cfg.STAGE2.EXTRACTOR_LR, "name": "extractor"}])
               if extractor else None)
    return optimizer_over(cfg, [{"params": heads, "lr": cfg.TRAIN.LR_SCHEDULER.LR_NEW, "name": "head"}]), ext_opt


class Stage2Loop:
    """One stage-2 epoch over a loader (``run``), the per-step losses and updates, and the GOAT reset."""

    def __init__(self, model, lb: LabelBalanced, criterion, optimizers: tuple, opts: Stage2Options):
        self.model, self.lb, self.criterion, self.opts = model, lb, criterion, opts
        self.head_opt, self.ext_opt = optimizers
        self.epoch = 0  # the epoch being trained (set by ``run``)

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

    def losses(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """(flooding loss of the stage-1 heads + BCE of the new heads, their detached parts)."""
        lb, o, epoch = self.lb, self.opts, self.epoch
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

    def optimise(self, loss: torch.Tensor) -> None:
        """One backward; per optimiser (the new heads, GOAT's extractor): DDP average, unscale, clip, step."""
        opts = [self.head_opt] + ([self.ext_opt] if self.goat_on(self.epoch) else [])
        optimise(loss, opts, self.opts.step, reduce=average_gradients)

    def before_step(self, step: int) -> None:
        """GOAT: the extractor back to stage 1 every STAGE2.RESET_EVERY steps."""
        if self.goat_on(self.epoch) and step % self.opts.reset_every == 0:
            self.reset()

    def skip(self) -> None:
        pass

    def run(self, loader, eo: EpochOptions) -> EpochResult:
        """Train one stage-2 epoch; the result (and a mid-epoch ``carry``) as ``train_one_epoch``'s."""
        self.model.eval()  # BatchNorm statistics frozen, no dropout: the whole of stage 2
        self.epoch = eo.epoch
        return run_epoch(loader, self, self.opts.step, eo)


class Stage2Trainer(Trainer):
    """``Trainer`` whose model, optimisers and epochs are stage 2's; hooks, validation, checkpoints, the
    metrics files and resume are the Trainer's (last.pth adds ``extractor_optimizer`` and ``stage2``)."""

    def build_model(self) -> torch.nn.Module:
        """The stage-1 run's model (RELOAD is required for stage 2)."""
        model = build_model(self.cfg, len(self.data.attr_names))
        reload_weights(self.cfg, model, self.data.attr_names)
        return model

    def build_net(self) -> torch.nn.Module:
        """Device and memory format, no DDP wrapper (the gradients are averaged by hand)."""
        return place_model(self.cfg, self.model, dataclasses.replace(self.rt, world=1))

    def build_ema(self) -> None:
        return None

    def build_optimizer(self) -> torch.optim.Optimizer:
        """The new heads' optimiser; the stage-1 heads kept beside them (``self.lb``) and GOAT's extractor
        optimiser (``self.extractor_optimizer``) are made here too."""
        cfg = self.cfg
        self.lb = LabelBalanced(self.model, cfg.TRAIN.STAGE2, cfg.STAGE2.BANK_SIZE, cfg.SEED + self.rt.rank)
        head_opt, self.extractor_optimizer = stage2_optimizers(cfg, self.model, self.lb.goat)
        return head_opt

    def build(self) -> None:
        super().build()
        cfg, s = self.cfg, self.cfg.STAGE2
        self.loop = Stage2Loop(self.model, self.lb, self.criterion, (self.optimizer, self.extractor_optimizer),
                               Stage2Options(self.step_options(), s.NUMBER, s.POS_PROB, s.RESET_EVERY,
                                             cfg.LOSS.SIZESUM))
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
            res = self.loop.run(loader, EpochOptions(epoch=epoch, stop=stop, start_step=self.state.step,
                                                     carry=self.state.partial, log_every=cfg.TRAIN.LOG_EVERY,
                                                     progress=rt.is_main, desc="stage 2"))
        except torch.cuda.OutOfMemoryError:
            raise oom_error("TRAIN.BATCH_SIZE", cfg.TRAIN.BATCH_SIZE) from None
        if not res.interrupted:
            self.loop.end_epoch(epoch)
        return res
