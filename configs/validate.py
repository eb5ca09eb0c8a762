"""Cheap sanity checks run before any heavy work, each failing with the key and the fix."""
from __future__ import annotations

from yacs.config import CfgNode as CN

from configs.errors import ConfigError

CHOICES = {
    "MODE": ("train", "eval", "video", "predict"),
    "FINETUNE.MODE": ("full", "partial", "head"),
    "TRAIN.AMP": ("auto", "bf16", "fp16", "off"),
    "TRAIN.ON_NONFINITE": ("stop", "skip"),
    "TRAIN.OPTIMIZER.TYPE": ("sgd", "adam", "adamw"),
    "TRAIN.LR_SCHEDULER.TYPE": ("plateau", "multistep", "warmup_cosine", "none"),
    "TRAIN.DATAAUG.TYPE": ("base", "none"),
    "DATASET.ON_BAD_IMAGE": ("skip", "error"),
    "LOSS.LA_MODE": ("none", "train", "posthoc"),
    "LOSS.SAMPLE_WEIGHT": ("", "weight"),
    "METRIC.SELECT": ("ma", "instance_f1", "mean_acc"),
    "TEST.DETECTOR": ("auto", "yolo", "hog", "file"),
    "TEST.SMOOTHING": ("ema", "window"),
}
GROUP_KINDS = ("exclusive", "optional")


def _get(cfg: CN, key: str):
    node = cfg
    for p in key.split("."):
        node = node[p]
    return node


def validate_config(cfg: CN) -> None:
    for key, allowed in CHOICES.items():
        value = _get(cfg, key)
        if value not in allowed:
            raise ConfigError(f"{key} = {value!r} is not one of {', '.join(repr(a) for a in allowed)}")

    d = cfg.DATASET
    fractions = (d.TRAIN_NATIVE_SPLIT, d.VAL_NATIVE_SPLIT, d.TEST_NATIVE_SPLIT)
    if any(f < 0 for f in fractions) or sum(fractions) > 1.0 + 1e-6:
        raise ConfigError(
            "DATASET.TRAIN/VAL/TEST_NATIVE_SPLIT must be >= 0 and sum to at most 1, got "
            f"{fractions} (sum {sum(fractions):.3f}); lower one of them"
        )
    if d.HEIGHT <= 0 or d.WIDTH <= 0:
        raise ConfigError(f"DATASET.HEIGHT/WIDTH must be positive, got {d.HEIGHT}x{d.WIDTH}")
    if cfg.TRAIN.BATCH_SIZE <= 0:
        raise ConfigError(f"TRAIN.BATCH_SIZE must be positive, got {cfg.TRAIN.BATCH_SIZE}")
    if cfg.TRAIN.MAX_EPOCH <= 0:
        raise ConfigError(f"TRAIN.MAX_EPOCH must be positive, got {cfg.TRAIN.MAX_EPOCH}")
    if len(set(d.ATTRS)) != len(d.ATTRS):
        dup = sorted({a for a in d.ATTRS if list(d.ATTRS).count(a) > 1})
        raise ConfigError(f"DATASET.ATTRS lists {dup} more than once; keep one of each")
    for g in d.GROUPS:
        if not isinstance(g, (list, tuple)) or len(g) < 3 or g[1] not in GROUP_KINDS:
            raise ConfigError(
                f"DATASET.GROUPS entry {g!r} must be [name, kind, attr, attr, ...] with kind in {GROUP_KINDS}"
            )
        if d.ATTRS:
            unknown = [a for a in g[2:] if a not in d.ATTRS]
            if unknown:
                raise ConfigError(
                    f"DATASET.GROUPS group '{g[0]}' names unknown attribute(s) {unknown}; "
                    "each must be listed in DATASET.ATTRS"
                )

    from losses.spec import check_loss_config  # LOSS.TYPE / LOSS.TERMS and their term parameters

    check_loss_config(cfg)
