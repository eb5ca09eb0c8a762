"""Building blocks of a training run: seeding, optimizer, LR schedule, RELOAD, model wrapping."""
from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np
import torch
from torch import nn
from yacs.config import CfgNode as CN

from models.par_model import PRETRAINED_GROUPS, PARModel
from tools.checkpoint import CheckpointError, load_checkpoint
from tools.device import Runtime
from tools.results import experiment_dir

log = logging.getLogger("train")


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def build_optimizer(cfg: CN, model: PARModel) -> torch.optim.Optimizer:
    """Pretrained groups (PRETRAINED_GROUPS) at LR_FT, new layers at LR_NEW; frozen parameters are left out."""
    sch = cfg.TRAIN.LR_SCHEDULER
    groups = []
    for name, modules in model.param_groups().items():
        params = [p for m in modules for p in m.parameters() if p.requires_grad]
        if params:
            groups.append({"params": params, "lr": sch.LR_FT if name in PRETRAINED_GROUPS else sch.LR_NEW, "name": name})
    if not groups:
        raise ValueError("no trainable parameters: check FINETUNE.MODE")
    return optimizer_over(cfg, groups)


def optimizer_over(cfg: CN, groups: list[dict]) -> torch.optim.Optimizer:
    """TRAIN.OPTIMIZER over these parameter groups: one fused kernel per step on CUDA and CPU (CPU: ~4x
    faster than foreach, which loops per tensor there)."""
    opt = cfg.TRAIN.OPTIMIZER
    fused = groups[0]["params"][0].device.type in ("cuda", "cpu")
    extra = {"fused": True} if fused else {"foreach": True}
    if opt.TYPE == "sgd":
        return torch.optim.SGD(groups, momentum=opt.MOMENTUM, weight_decay=opt.WEIGHT_DECAY, **extra)
    cls = torch.optim.Adam if opt.TYPE == "adam" else torch.optim.AdamW
    return cls(groups, weight_decay=opt.WEIGHT_DECAY, **extra)


def build_scheduler(cfg: CN, optimizer: torch.optim.Optimizer):
    s = cfg.TRAIN.LR_SCHEDULER
    if s.TYPE == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=s.FACTOR,
                                                          patience=s.PATIENCE)
    if s.TYPE == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(s.LR_STEP), gamma=s.FACTOR)
    if s.TYPE == "warmup_cosine":
        warm, total = s.WMUP_EPOCHS, cfg.TRAIN.MAX_EPOCH

        def factor(epoch: int) -> float:
            if epoch < warm:
                return s.WMUP_COEF + (1 - s.WMUP_COEF) * epoch / max(warm, 1)
            return float(0.5 * (1 + np.cos(np.pi * (epoch - warm) / max(total - warm, 1))))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return None


def _reload_state(cfg: CN, model: PARModel, path: Path) -> tuple[dict, list[str] | None]:
    """(weights in this framework's naming, the checkpoint's attribute names when it has them)."""
    ckpt = load_checkpoint(path, trusted=cfg.RELOAD.TRUSTED)
    state = ckpt.get("model") if isinstance(ckpt, dict) else None
    if state is not None:
        return state, list(ckpt.get("attr_names") or []) or None
    from models.c2t.convert import convert_original_state_dict, is_original_c2t  # only for original files

    if not is_original_c2t(ckpt):
        raise CheckpointError(f"{path} holds neither a 'model' state dict nor an original C2T-Net checkpoint")
    return convert_original_state_dict(ckpt, model), None


def _mapped_head(cfg: CN, model: PARModel, state: dict, source_attrs: list[str] | None,
                 attr_names: list[str]) -> dict:
    """Head tensors whose rows of mapped attributes come from the checkpoint's (RELOAD.ATTR_MAP)."""
    from dataset.attr_map import head_rows, resolve_map_path

    if not source_attrs:
        raise CheckpointError(f"RELOAD.ATTR_MAP = {cfg.RELOAD.ATTR_MAP}: the checkpoint lists no attr_names to map from")
    if cfg.MODEL.HEAD != "linear":  # the split head's (N*C, C) layer holds blocks per attribute, not rows
        raise CheckpointError(f"RELOAD.ATTR_MAP maps rows of the linear head; MODEL.HEAD {cfg.MODEL.HEAD} is not "
                              "supported (use MODEL.HEAD linear, or RELOAD.ATTR_MAP '')")
    rows = head_rows(resolve_map_path(cfg.RELOAD.ATTR_MAP), source_attrs, attr_names)
    own = model.state_dict()
    out = {}
    for k, v in own.items():
        if k.startswith("head.") and k in state and v.dim() >= 1 and state[k].shape[1:] == v.shape[1:]:
            new = v.clone()
            for dst, src in rows.items():
                new[dst] = state[k][src]
            out[k] = new
    log.info("RELOAD.ATTR_MAP %s: %d of %d head rows start from the checkpoint's (%s)", cfg.RELOAD.ATTR_MAP,
             len(rows), len(attr_names), ", ".join(f"{attr_names[d]}<-{source_attrs[s]}" for d, s in
                                                   list(rows.items())[:6]) + (", ..." if len(rows) > 6 else ""))
    return out


TASK_HEADS = ("head.", "reid_head.")  # the task-specific parts; the rest is the backbone a RELOAD must match


def reload_weights(cfg: CN, model: PARModel, attr_names: list[str] | None = None) -> None:
    """RELOAD: start from another experiment's checkpoint (or an original C2T-Net file).
    A head of another size (other attribute list) is re-initialised, except the rows RELOAD.ATTR_MAP
    maps to the checkpoint's attributes; everything else must match."""
    path = Path(cfg.RELOAD.PTH)
    if not path.is_absolute() and not path.is_file():
        path = experiment_dir(cfg, cfg.RELOAD.MODEL_FOLDER_NAME, cfg.RELOAD.DATASET or None) / cfg.RELOAD.PTH
    state, source_attrs = _reload_state(cfg, model, path)
    own = model.state_dict()
    head_keys = [k for k in state if k.startswith("head.")]
    if head_keys and not any(k.startswith("head.") for k in own):  # a ReID model has no attribute head
        log.info("RELOAD: the checkpoint's attribute head is not used (TASK %s)", cfg.TASK)
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
    elif any(k not in own or own[k].shape != state[k].shape for k in head_keys):  # other attributes or head type
        mapped = _mapped_head(cfg, model, state, source_attrs, attr_names or []) if cfg.RELOAD.ATTR_MAP else {}
        if not mapped:
            log.info("RELOAD: the checkpoint's head has another attribute count or type; the head is re-initialised")
        state = {**{k: v for k, v in state.items() if not k.startswith("head.")}, **mapped}
    other_head = [k for k, v in state.items() if k.startswith(TASK_HEADS) and k in own and own[k].shape != v.shape]
    if other_head:  # e.g. a ReID checkpoint of another identity count: its head starts fresh
        log.info("RELOAD: %s of another shape in the checkpoint; initialised fresh",
                 ", ".join(sorted({k.split(".")[0] for k in other_head})))
        state = {k: v for k, v in state.items() if k not in other_head}
    wrong = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if wrong:
        raise CheckpointError(f"RELOAD {path}: other tensor shapes than the model ({wrong[:3]}: "
                              f"{[tuple(state[k].shape) for k in wrong[:3]]} vs {[tuple(own[k].shape) for k in wrong[:3]]}"
                              "); RELOAD a checkpoint of the same MODEL.NAME / BACKBONE")
    # a task head the checkpoint lacks starts fresh (a PAR model starting a ReID run), one the model lacks is dropped
    missing, unexpected = model.load_state_dict(state, strict=False)
    fresh = sorted({k.split(".")[0] for k in missing if k.startswith(TASK_HEADS)})
    if fresh:
        log.info("RELOAD: %s not in the checkpoint; initialised fresh", ", ".join(fresh))
    missing = [k for k in missing if not k.startswith(TASK_HEADS)]
    unexpected = [k for k in unexpected if not k.startswith(TASK_HEADS)]
    if missing or unexpected:
        raise CheckpointError(f"RELOAD {path}: does not match the model (missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]}); check MODEL.* against that experiment")
    log.info("RELOAD: weights loaded from %s", path)


def set_memory_format(cfg: CN, model: nn.Module) -> nn.Module:
    """channels_last (MODEL.CHANNELS_LAST) on CUDA and CPU alike: oneDNN's convolutions run ~1.6x faster
    in it on CPU. Inference applies the same format, so its numbers equal training's to the last bit."""
    return model.to(memory_format=torch.channels_last) if cfg.MODEL.CHANNELS_LAST else model


def place_model(cfg: CN, model: PARModel, rt: Runtime) -> nn.Module:
    """Move to the device in the configured memory format; the network the loop runs: DDP / compile wrapped."""
    set_memory_format(cfg, model.to(rt.device))
    net: nn.Module = model
    if rt.distributed:
        if rt.device.type == "cuda" and cfg.DIST.SYNC_BN:
            net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
        net = nn.parallel.DistributedDataParallel(  # grads as views of the buckets: one copy less per step
            net, device_ids=[rt.device.index] if rt.device.type == "cuda" else None, gradient_as_bucket_view=True)
    if cfg.MODEL.COMPILE:
        net = torch.compile(net)
    return net


def oom_error(key: str, value: int) -> MemoryError:
    return MemoryError(f"CUDA ran out of memory at {key} {value}; lower {key}, or use TRAIN.AMP bf16/fp16 "
                       "(or FINETUNE.MODE partial/head to train fewer weights)")
