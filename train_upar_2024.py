"""Training and evaluation entry points: ``train(cfg)`` and ``evaluate(cfg)``.

Builds data, model, loss, optimizer and scheduler from the config, runs the batch engine and
writes everything a person reads under ``exp_results/<DATASET>/<NAME>/``.
"""
from __future__ import annotations

import logging
import random
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from yacs.config import CfgNode as CN

from batch_engine import ModelEma, NonFiniteLoss, StopRequest, train_one_epoch, validate
from dataset import build_data, build_loaders, used_splits
from dataset.base import PARData
from losses import build_loss
from models import build_model
from models.par_model import PRETRAINED_GROUPS, PARModel
from tools.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from tools.device import Runtime, barrier, broadcast_from_main, gather_arrays, mean_across_ranks, setup_runtime
from tools.errors import UserError
from tools.metrics import SUMMARY_KEYS, compute_metrics, decode_exclusive, majority_baseline
from tools.results import (
    experiment_dir,
    plot_curves,
    scalar_metrics,
    setup_logging,
    write_attribute_report,
    write_json,
    write_metrics_csv,
)

log = logging.getLogger("train")


class ExperimentExists(UserError, RuntimeError):
    """The experiment folder already holds a run (finished, or stopped and resumable)."""


# What a run writes into its experiment folder; --overwrite removes these (and tensorboard/) first.
RUN_FILES = ("last.pth", "best_model.pth", "summary.json", "best_metrics.json", "metrics.csv", "log.txt",
             "curves.png", "attributes_best.csv", "attributes_best.png")


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


# ----------------------------------------------------------------------------- building blocks
def build_optimizer(cfg: CN, model: PARModel) -> torch.optim.Optimizer:
    """Pretrained groups (PRETRAINED_GROUPS) at LR_FT, new layers at LR_NEW; frozen parameters are left out."""
    sch, opt = cfg.TRAIN.LR_SCHEDULER, cfg.TRAIN.OPTIMIZER
    groups = []
    for name, modules in model.param_groups().items():
        params = [p for m in modules for p in m.parameters() if p.requires_grad]
        if params:
            groups.append({"params": params, "lr": sch.LR_FT if name in PRETRAINED_GROUPS else sch.LR_NEW, "name": name})
    if not groups:
        raise ValueError("no trainable parameters: check FINETUNE.MODE")
    # One fused kernel per step on CUDA and CPU (CPU: ~4x faster than foreach, which loops per tensor there).
    fused = next(iter(model.parameters())).device.type in ("cuda", "cpu")
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


def reload_weights(cfg: CN, model: PARModel) -> None:
    """RELOAD: start from another experiment's checkpoint (or an original C2T-Net file).
    A head of another size (other attribute list) is re-initialised; everything else must match."""
    path = Path(cfg.RELOAD.PTH)
    if not path.is_absolute() and not path.is_file():
        path = experiment_dir(cfg, cfg.RELOAD.MODEL_FOLDER_NAME, cfg.RELOAD.DATASET or None) / cfg.RELOAD.PTH
    ckpt = load_checkpoint(path, trusted=cfg.RELOAD.TRUSTED)
    state = ckpt.get("model") if isinstance(ckpt, dict) else None
    if state is None:
        from models.c2t.convert import convert_original_state_dict, is_original_c2t

        if not is_original_c2t(ckpt):
            raise CheckpointError(f"{path} holds neither a 'model' state dict nor an original C2T-Net checkpoint")
        state = convert_original_state_dict(ckpt, model)
    own = model.state_dict()
    head_keys = [k for k in state if k.startswith("head.")]
    if any(k in own and own[k].shape != state[k].shape for k in head_keys):
        log.info("RELOAD: the checkpoint's head has another attribute count; the head is re-initialised")
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("head.")]
    if missing or unexpected:
        raise CheckpointError(f"RELOAD {path}: does not match the model (missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]}); check MODEL.* against that experiment")
    log.info("RELOAD: weights loaded from %s", path)


def group_indices(data: PARData) -> list[list[int]]:
    return [g.indices(data.attr_names) for g in data.groups if g.kind == "exclusive"]


def evaluate_split(cfg: CN, model: nn.Module, loader, criterion, rt: Runtime, data: PARData,
                   desc: str) -> tuple[dict, float, np.ndarray]:
    probs, labels, _, loss = validate(model, loader, criterion, device=rt.device, amp_dtype=rt.amp_dtype,
                                      desc=desc, progress=rt.is_main)
    loss, = mean_across_ranks(rt, [loss], [len(probs)])  # each rank saw its shard of the split
    probs, labels = gather_arrays(rt, probs, labels)
    if cfg.METRIC.GROUP_ARGMAX:
        probs = decode_exclusive(probs, group_indices(data))
    return compute_metrics(probs, labels, cfg.METRIC.THRESHOLD), loss, probs


# ----------------------------------------------------------------------------- training
def train(cfg: CN, overwrite: bool = False) -> dict:
    """Train per the config; returns the summary also written to ``summary.json``."""
    rt = setup_runtime(cfg)
    exp = experiment_dir(cfg)
    resume_path = _resume_path(cfg, exp)
    refused = None
    if rt.is_main and resume_path is None:
        try:
            _claim_folder(exp, overwrite)
        except ExperimentExists as e:
            refused = str(e)
    refused = broadcast_from_main(rt, refused)  # every DDP rank stops, not only rank 0
    if refused:
        raise ExperimentExists(refused)
    setup_logging(exp, cfg.REDIRECTOR, rt.is_main)
    if rt.is_main:
        (exp / "config.yaml").write_text(cfg.dump())
    log.info("experiment %s on %s (AMP %s, world %d)", exp, rt.device, rt.amp_dtype, rt.world)
    seed_everything(cfg.SEED, cfg.DETERMINISTIC)

    data = build_data(cfg)
    splits = used_splits(cfg, data)
    loaders, bad = build_loaders(cfg, data, splits, rt.device, rt.rank, rt.world)
    train_split, val_split = cfg.DATASET.TRAIN_SPLIT, cfg.DATASET.VAL_SPLIT
    test_split = cfg.DATASET.TEST_SPLIT if cfg.DATASET.TEST_SPLIT in splits else ""
    log.info("%s: %d attributes; %s", data.name, len(data.attr_names),
             ", ".join(f"{s} {len(loaders[s].rows)} images" for s in splits))
    priors = data.label_priors(train_split)

    model = build_model(cfg, len(data.attr_names))
    if cfg.RELOAD.TYPE:
        reload_weights(cfg, model)
    model.to(rt.device)
    if rt.device.type == "cuda" and cfg.MODEL.CHANNELS_LAST:
        model.to(memory_format=torch.channels_last)
    ema = ModelEma(model, cfg.TRAIN.EMA_DECAY) if cfg.TRAIN.EMA else None
    criterion = build_loss(cfg, data.attr_names, data.groups, priors, model).to(rt.device)
    optimizer = build_optimizer(cfg, model)
    scheduler = build_scheduler(cfg, optimizer)
    scaler = torch.amp.GradScaler("cuda") if rt.amp_dtype == torch.float16 else None
    net: nn.Module = model
    if rt.distributed:
        if rt.device.type == "cuda" and cfg.DIST.SYNC_BN:
            net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
        net = nn.parallel.DistributedDataParallel(  # grads as views of the buckets: one copy less per step
            net, device_ids=[rt.device.index] if rt.device.type == "cuda" else None, gradient_as_bucket_view=True)
    if cfg.MODEL.COMPILE:
        net = torch.compile(net)

    state = {"epoch": 0, "step": 0, "partial": None, "best": -1.0, "best_epoch": -1, "history": []}
    if resume_path is not None:
        state = _resume(resume_path, model, optimizer, scheduler, scaler, ema, criterion, state)
        if rt.is_main and state["history"]:  # a kill between last.pth and metrics.csv left the csv one epoch behind
            write_metrics_csv(exp / "metrics.csv", state["history"])

    writer = _tensorboard(cfg, exp, rt)
    start_epoch = state["epoch"]
    if start_epoch >= cfg.TRAIN.MAX_EPOCH:
        log.info("nothing to do: already trained %d of %d epochs", start_epoch, cfg.TRAIN.MAX_EPOCH)
    t_start = time.perf_counter()
    with StopRequest() as stop:
        if start_epoch < cfg.TRAIN.MAX_EPOCH:
            log.info("training epochs %d-%d; Ctrl-C (or SIGTERM) stops after the current step and saves last.pth",
                     start_epoch, cfg.TRAIN.MAX_EPOCH - 1)
        for epoch in range(start_epoch, cfg.TRAIN.MAX_EPOCH):
            loaders[train_split].set_epoch(epoch, state["step"])
            try:
                res = train_one_epoch(net, loaders[train_split], criterion, optimizer, device=rt.device,
                                      amp_dtype=rt.amp_dtype, scaler=scaler,
                                      clip_norm=cfg.TRAIN.CLIP_NORM if cfg.TRAIN.CLIP_GRAD else 0.0,
                                      ema=ema, epoch=epoch, log_every=cfg.TRAIN.LOG_EVERY,
                                      on_nonfinite=cfg.TRAIN.ON_NONFINITE, stop=stop, start_step=state["step"],
                                      carry=state["partial"], progress=rt.is_main)
            except torch.cuda.OutOfMemoryError:
                raise _oom_error("TRAIN.BATCH_SIZE", cfg.TRAIN.BATCH_SIZE) from None
            except NonFiniteLoss as e:
                last = exp / "last.pth"
                kept = (f"last good checkpoint: {last} ({state['epoch']} epoch(s) done)" if last.is_file()
                        else "no checkpoint was written before it")
                raise NonFiniteLoss(f"{e} [{kept}]") from None
            if res.interrupted:
                state.update(epoch=epoch, step=res.last_step, partial=res.carry())
                if rt.is_main:
                    _save_last(exp, cfg, data, model, optimizer, scheduler, scaler, ema, criterion, state)
                raise KeyboardInterrupt(_resume_hint(exp, epoch, res.last_step))
            state["step"], state["partial"] = 0, None
            if rt.distributed:  # the ranks trained on equal slices of the same global batches
                keys = list(res.parts)
                res.loss, *vals = mean_across_ranks(rt, [res.loss, *res.parts.values()])
                res.parts = dict(zip(keys, vals))
                res.images *= rt.world  # global throughput
            row = {"epoch": epoch, "lr": float(optimizer.param_groups[-1]["lr"]), "train_loss": res.loss,
                   "train_images_per_s": res.images_per_s, "train_seconds": res.seconds,
                   "skipped_steps": res.skipped_steps, "bad_images": len(bad.skipped)}
            row.update({f"train_{k}": v for k, v in res.parts.items()})
            if bad.skipped:
                log.warning("epoch %d: %d bad image(s) skipped so far", epoch, len(bad.skipped))
            eval_model = ema.module if ema is not None else model
            last_epoch = epoch + 1 == cfg.TRAIN.MAX_EPOCH
            if (epoch + 1) % cfg.TRAIN.EVAL_EVERY == 0 or last_epoch:
                reports = {}
                for split in [val_split] + ([test_split] if test_split else []):
                    try:
                        m, loss, _ = evaluate_split(cfg, eval_model, loaders[split], criterion, rt, data, split)
                    except torch.cuda.OutOfMemoryError:
                        raise _oom_error("TEST.BATCH_SIZE", cfg.TEST.BATCH_SIZE) from None
                    reports[split] = m
                    row[f"{_tag(cfg, split)}_loss"] = loss
                    row.update({f"{_tag(cfg, split)}_{k}": v for k, v in scalar_metrics(m).items()})
                val = reports[val_split]
                criterion.on_validation_end(val["per_attr"]["pos_recall"], val["per_attr"]["neg_recall"])
                score = val[cfg.METRIC.SELECT]
                if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    scheduler.step(score)
                log.info("epoch %d  loss %.4f  %.1f img/s | val mA %.4f F1 %.4f%s", epoch, res.loss,
                         res.images_per_s, val["ma"], val["instance_f1"],
                         f" | test mA {reports[test_split]['ma']:.4f}" if test_split else "")
                if score > state["best"] and rt.is_main:
                    state["best"], state["best_epoch"] = score, epoch
                    _save_best(exp, cfg, data, eval_model, state, reports)
                elif score > state["best"]:
                    state["best"], state["best_epoch"] = score, epoch
            if scheduler is not None and not isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                scheduler.step()
            state["history"].append(row)
            state["epoch"] = epoch + 1
            if rt.is_main:
                _save_last(exp, cfg, data, model, optimizer, scheduler, scaler, ema, criterion, state)
                write_metrics_csv(exp / "metrics.csv", state["history"])
                if cfg.VIS.PLOTS:
                    plot_curves(exp / "curves.png", state["history"])
                if writer is not None:
                    for k, v in row.items():
                        if isinstance(v, (int, float)) and k != "epoch":
                            writer.add_scalar(k.replace("_", "/", 1), v, epoch)
                    writer.flush()
            if stop.requested and epoch + 1 < cfg.TRAIN.MAX_EPOCH:  # a signal during validation / saving
                raise KeyboardInterrupt(_resume_hint(exp, epoch + 1, 0))
    summary = _finish(cfg, exp, data, state, loaders, t_start, rt)
    if writer is not None:
        writer.close()
    return summary


def _claim_folder(exp: Path, overwrite: bool) -> None:
    """A fresh run never silently replaces a finished run, nor one that was stopped and can be resumed."""
    finished, stopped = (exp / "summary.json").is_file(), (exp / "last.pth").is_file()
    if not (finished or stopped):
        return
    if not overwrite:
        what = "a finished run" if finished else "a stopped run (last.pth) that can be resumed"
        raise ExperimentExists(f"{exp} already holds {what}; set TRAIN.RESUME auto to continue it, "
                               "choose another NAME, or pass --overwrite to replace it")
    import shutil

    for name in RUN_FILES:
        (exp / name).unlink(missing_ok=True)
    shutil.rmtree(exp / "tensorboard", ignore_errors=True)
    log.warning("--overwrite: removed the previous run's results from %s", exp)


def _resume_hint(exp: Path, epoch: int, step: int) -> str:
    return (f"stopped at epoch {epoch}, step {step}; {exp / 'last.pth'} saved. Resume with: "
            f"uv run run.py --config-file {exp / 'config.yaml'} TRAIN.RESUME auto")


def _oom_error(key: str, value: int) -> MemoryError:
    return MemoryError(f"CUDA ran out of memory at {key} {value}; lower {key}, or use TRAIN.AMP bf16/fp16 "
                       "(or FINETUNE.MODE partial/head to train fewer weights)")


def _tag(cfg: CN, split: str) -> str:
    """Column prefix: 'val' / 'test' whatever the split is called."""
    return "val" if split == cfg.DATASET.VAL_SPLIT else "test"


def _tensorboard(cfg: CN, exp: Path, rt: Runtime):
    if not (cfg.VIS.TENSORBOARD and rt.is_main):
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(exp / "tensorboard"))


def _resume_path(cfg: CN, exp: Path) -> Path | None:
    r = cfg.TRAIN.RESUME
    if not r:
        return None
    if r == "auto":
        p = exp / "last.pth"
        if not p.is_file():
            logging.getLogger("train").info("TRAIN.RESUME auto: no %s yet, starting fresh", p)
            return None
        return p
    if not Path(r).is_file():
        raise CheckpointError(f"TRAIN.RESUME = {r!r}: file not found (use auto or a path to a last.pth)")
    return Path(r)


def _save_last(exp, cfg, data, model, optimizer, scheduler, scaler, ema, criterion, state) -> None:
    save_checkpoint({
        "model": model.state_dict(), "attr_names": data.attr_names,
        "groups": [[g.name, g.kind, *g.attrs] for g in data.groups], "cfg": cfg.dump(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "ema": ema.module.state_dict() if ema is not None else None,
        "criterion": criterion.state_dict(), "rng": {"torch": torch.get_rng_state()},
        "epoch": state["epoch"], "step": state["step"], "partial": state.get("partial"), "best_metric": state["best"],
        "best_epoch": state["best_epoch"], "history": state["history"],
    }, exp / "last.pth")


def _save_best(exp, cfg, data, model, state, reports) -> None:
    save_checkpoint({"model": model.state_dict(), "attr_names": data.attr_names,
                     "groups": [[g.name, g.kind, *g.attrs] for g in data.groups], "cfg": cfg.dump(),
                     "epoch": state["best_epoch"], "best_metric": state["best"]}, exp / "best_model.pth")
    write_attribute_report(exp / "attributes_best.csv", data.attr_names, reports, cfg.VIS.PLOTS)
    write_json(exp / "best_metrics.json", {"epoch": state["best_epoch"],
                                           **{s: scalar_metrics(m) for s, m in reports.items()}})


def _resume(path, model, optimizer, scheduler, scaler, ema, criterion, state) -> dict:
    ck = load_checkpoint(path)
    try:
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        if scheduler is not None and ck.get("scheduler") is not None:
            scheduler.load_state_dict(ck["scheduler"])
        if scaler is not None and ck.get("scaler") is not None:
            scaler.load_state_dict(ck["scaler"])
        if ema is not None and ck.get("ema") is not None:
            ema.module.load_state_dict(ck["ema"])
        criterion.load_state_dict(ck["criterion"])
        torch.set_rng_state(ck["rng"]["torch"])
        out = {"epoch": ck["epoch"], "step": ck["step"], "partial": ck.get("partial"), "best": ck["best_metric"],
               "best_epoch": ck["best_epoch"], "history": list(ck["history"])}
    except (KeyError, RuntimeError, ValueError, TypeError) as e:
        why = " ".join(line.strip() for line in str(e).splitlines() if line.strip())[:200]  # names the keys
        raise CheckpointError(f"TRAIN.RESUME: {path} does not fit this run ({type(e).__name__}: "
                              f"{why}); resume with the config it was written with "
                              f"({path.parent / 'config.yaml'}), or start fresh in another NAME") from None
    log.info("resumed from %s at epoch %d step %d", path, ck["epoch"], ck["step"])
    return out


def _finish(cfg, exp, data, state, loaders, t_start, rt) -> dict:
    import json

    barrier(rt)  # rank 0 may still be writing best_metrics.json
    best_file = exp / "best_metrics.json"
    best = json.loads(best_file.read_text()) if best_file.is_file() else {}
    val = best.get(cfg.DATASET.VAL_SPLIT, {})
    test = best.get(cfg.DATASET.TEST_SPLIT) if cfg.DATASET.TEST_SPLIT else None
    train_labels = data.split_labels(cfg.DATASET.TRAIN_SPLIT)
    val_labels = data.labels[loaders[cfg.DATASET.VAL_SPLIT].rows]
    summary = {
        "name": cfg.NAME, "dataset": data.name, "seed": cfg.SEED, "best_epoch": state["best_epoch"],
        "epochs": state["epoch"], "select": cfg.METRIC.SELECT,
        "val": {k: val.get(k) for k in SUMMARY_KEYS}, "test": {k: test.get(k) for k in SUMMARY_KEYS} if test else None,
        "majority_val": {k: v for k, v in scalar_metrics(majority_baseline(train_labels, val_labels)).items()
                         if k in SUMMARY_KEYS},
        "wall_seconds": round(time.perf_counter() - t_start, 1),
        "config": str(exp / "config.yaml"),
    }
    if rt.is_main:
        write_json(exp / "summary.json", summary)
    log.info("best epoch %d: val mA %s%s; results in %s", state["best_epoch"],
             f"{val.get('ma', float('nan')):.4f}",
             f", test mA {test['ma']:.4f}" if test else "", exp)
    return summary


# ----------------------------------------------------------------------------- evaluation
def evaluate(cfg: CN) -> dict:
    """--mode eval: load a checkpoint and write metrics for TEST.SPLIT."""
    from tools.inference import experiment_dir as inference_dir
    from tools.inference import inference_cfg, resolve_checkpoint

    rt = setup_runtime(cfg)
    exp = inference_dir(cfg)
    setup_logging(exp, cfg.REDIRECTOR, rt.is_main)
    path = resolve_checkpoint(cfg)
    ck = load_checkpoint(path, trusted=cfg.RELOAD.TRUSTED)
    data = build_data(cfg)
    if list(ck["attr_names"]) != data.attr_names:
        raise CheckpointError(f"{path} was trained on other attributes than DATASET.ATTRS; use the same attribute list")
    split = cfg.TEST.SPLIT
    if split == "all":
        data.splits["all"] = np.arange(len(data.image_paths))
    if split not in data.splits:
        raise CheckpointError(f"TEST.SPLIT = {split!r} not in {sorted(data.splits)}")
    model = build_model(inference_cfg(cfg), len(data.attr_names))
    model.load_state_dict(ck["model"])
    model.to(rt.device)
    loaders, _ = build_loaders(cfg, data, [split], rt.device, rt.rank, rt.world)
    criterion = build_loss(cfg, data.attr_names, data.groups, data.label_priors(cfg.DATASET.TRAIN_SPLIT), model)
    if "criterion" in ck:
        criterion.load_state_dict(ck["criterion"])
    criterion.to(rt.device)
    m, loss, _ = evaluate_split(cfg, model, loaders[split], criterion, rt, data, f"eval {split}")
    out = {"checkpoint": str(path), "split": split, "loss": loss, **scalar_metrics(m)}
    if rt.is_main:
        write_json(exp / f"eval_{split}.json", out)
        write_attribute_report(exp / f"eval_{split}_attributes.csv", data.attr_names, {split: m}, cfg.VIS.PLOTS)
    log.info("%s on %s: mA %.4f, mean acc %.4f, instance F1 %.4f (written to %s)", path, split, m["ma"],
             m["mean_acc"], m["instance_f1"], exp)
    return out
