"""Cheap sanity checks run before any heavy work, each failing with the key and the fix."""
from __future__ import annotations

from yacs.config import CfgNode as CN

from configs.errors import ConfigError

CHOICES = {
    "MODE": ("train", "eval", "video", "predict", "search", "serve"),
    "FINETUNE.MODE": ("full", "partial", "head"),
    "TRAIN.AMP": ("auto", "bf16", "fp16", "off"),
    "TRAIN.ON_NONFINITE": ("stop", "skip"),
    "TRAIN.OPTIMIZER.TYPE": ("sgd", "adam", "adamw"),
    "TRAIN.LR_SCHEDULER.TYPE": ("plateau", "multistep", "warmup_cosine", "none"),
    "TRAIN.DATAAUG.TYPE": ("base", "none"),
    "DATASET.ON_BAD_IMAGE": ("skip", "error"),
    "LOSS.LA_MODE": ("none", "train", "posthoc"),
    "LOSS.SAMPLE_WEIGHT": ("", "weight"),
    "TASK": ("par", "reid", "multitask"),
    "METRIC.SELECT": ("ma", "instance_f1", "mean_acc", "mAP", "rank1", "mINP"),
    "MODEL.HEAD": ("linear", "split"),
    "TRAIN.STAGE2": ("none", "frdl", "goat", "frdl_goat"),
    "METRIC.EVAL_ATTRS": ("all", "published"),
    "TEST.DETECTOR": ("auto", "ssdlite", "yolo", "hog", "file"),
    "TEST.PAR_RUNTIME": ("auto", "onnx", "torch"),
    "TEST.SMOOTHING": ("ema", "window"),
    "SEARCH.RETRIEVAL_PROTOCOL": ("upar", "groups"),
    "METRIC.DECISION": ("threshold", "ma", "f1", "joint", "tau_ma", "tau_f1", "tau_joint"),
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
    if not 0.0 < cfg.METRIC.THRESHOLD < 1.0:
        raise ConfigError(f"METRIC.THRESHOLD = {cfg.METRIC.THRESHOLD} must be in (0, 1); the usual is 0.5")
    if cfg.METRIC.DECISION != "threshold" and d.VAL_SPLIT == d.TEST_SPLIT:
        raise ConfigError(f"METRIC.DECISION {cfg.METRIC.DECISION} fits thresholds on DATASET.VAL_SPLIT, which is also "
                          f"DATASET.TEST_SPLIT ({d.VAL_SPLIT}); validate on another split or use METRIC.DECISION threshold")
    if (cfg.TEST.ATTR_MAP or cfg.TEST.SUBSET) and not cfg.TEST.DATASET:
        raise ConfigError("TEST.ATTR_MAP / TEST.SUBSET apply to a cross-domain eval; set TEST.DATASET (e.g. PETA) too")
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

    from configs.loss_spec import check_loss_config  # LOSS.TYPE / LOSS.TERMS and their term parameters

    check_loss_config(cfg)
    if cfg.TRAIN.STAGE2 != "none":
        check_stage2_config(cfg)
    check_task_config(cfg)


def check_stage2_config(cfg: CN) -> None:
    """TRAIN.STAGE2 (label-balanced stage 2) starts from a split-head run and trains with plain BCE."""
    from configs.loss_spec import resolve_loss_spec

    mode, s = cfg.TRAIN.STAGE2, cfg.STAGE2
    if cfg.MODEL.HEAD != "split":
        raise ConfigError(f"TRAIN.STAGE2 {mode} needs MODEL.HEAD split (the stage-1 run's head), "
                          f"got {cfg.MODEL.HEAD!r}")
    if not cfg.RELOAD.TYPE:
        raise ConfigError(f"TRAIN.STAGE2 {mode} starts from a stage-1 run: set RELOAD.TYPE True and "
                          "RELOAD.MODEL_FOLDER_NAME (or RELOAD.PTH) to its experiment")
    if cfg.TRAIN.EMA:
        raise ConfigError(f"TRAIN.STAGE2 {mode} does not use an EMA of the weights; set TRAIN.EMA False")
    spec = resolve_loss_spec(cfg)
    plain = (len(spec.terms) == 1 and spec.terms[0].name == "bce" and not spec.needs_priors
             and not spec.logit_update and spec.terms[0].params.get("LABEL_SMOOTH", 0) == 0
             and spec.terms[0].params.get("SCALE", 1.0) == 1.0)
    if not plain:
        raise ConfigError(f"TRAIN.STAGE2 {mode} trains with plain BCE: use LOSS.TYPE bceloss without "
                          "SAMPLE_WEIGHT, LABEL_SMOOTH, LOGIT_UPDATE, LA_MODE or LOSS.TERMS")
    if s.BANK_SIZE < 1 or not 0.0 < s.POS_PROB < 1.0 or s.RESET_EVERY < 1 or s.NUMBER < 0 or s.EXTRACTOR_LR <= 0:
        raise ConfigError(f"STAGE2: BANK_SIZE >= 1, 0 < POS_PROB < 1, RESET_EVERY >= 1, NUMBER >= 0 and "
                          f"EXTRACTOR_LR > 0 are needed, got {s.BANK_SIZE}, {s.POS_PROB}, {s.RESET_EVERY}, "
                          f"{s.NUMBER}, {s.EXTRACTOR_LR}")


REID_SELECT = ("mAP", "rank1", "mINP")  # METRIC.SELECT values scored on the ReID validation pair


def check_task_config(cfg: CN) -> None:
    """TASK reid / multitask: PK batches, a ReID selection metric only where there is an embedding."""
    for key, hint in (("RANDOM_ERASING", "ReID: 0.5"), ("LOW_QUALITY", "e.g. 0.3")):
        p = cfg.TRAIN.DATAAUG[key]
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"TRAIN.DATAAUG.{key} = {p} is a probability; use a value in [0, 1] ({hint})")
        if p > 0 and cfg.TRAIN.DATAAUG.TYPE == "none":
            raise ConfigError(f"TRAIN.DATAAUG.{key} = {p} but TRAIN.DATAAUG.TYPE none turns every augmentation off; "
                              "set TRAIN.DATAAUG.TYPE base or the probability to 0")
    if cfg.TASK == "par":
        if cfg.METRIC.SELECT in REID_SELECT:
            raise ConfigError(f"METRIC.SELECT {cfg.METRIC.SELECT} is a ReID metric but TASK is par; select on ma | "
                              "instance_f1 | mean_acc, or set TASK reid / multitask")
        return
    if cfg.TRAIN.STAGE2 != "none":
        raise ConfigError(f"TRAIN.STAGE2 {cfg.TRAIN.STAGE2} is an attribute stage; set TASK par or TRAIN.STAGE2 none")
    k, bs = cfg.REID.NUM_INSTANCE, cfg.TRAIN.BATCH_SIZE
    if k < 1 or bs % k or bs // k < 2:
        raise ConfigError(f"TASK {cfg.TASK}: TRAIN.BATCH_SIZE {bs} must be P x REID.NUM_INSTANCE {k} with P >= 2 "
                          "identities per batch; e.g. 64 = 16 x 4")
    weights = {"REID.TASK_WEIGHT": cfg.REID.TASK_WEIGHT, "REID.ATTR_WEIGHT": cfg.REID.ATTR_WEIGHT,
               "REID.CENTER_LR": cfg.REID.CENTER_LR}
    bad = [f"{key} = {v}" for key, v in weights.items() if v < 0]
    if bad:
        raise ConfigError(f"{bad[0]} is negative; loss weights and the center step must be >= 0")
    if cfg.REID.TASK_WEIGHTING not in ("fixed", "gradnorm"):
        raise ConfigError(f"REID.TASK_WEIGHTING = {cfg.REID.TASK_WEIGHTING!r} is not one of fixed | gradnorm")
    if cfg.REID.TASK_WEIGHTING == "gradnorm":
        if cfg.TASK != "multitask":
            raise ConfigError("REID.TASK_WEIGHTING gradnorm weighs the two tasks of TASK multitask; "
                              f"TASK {cfg.TASK} has one (use fixed)")
        if min(cfg.REID.TASK_WEIGHT, cfg.REID.ATTR_WEIGHT) <= 0 or cfg.REID.GRADNORM_LR <= 0 or cfg.REID.GRADNORM_ALPHA < 0:
            raise ConfigError("REID.TASK_WEIGHTING gradnorm needs REID.TASK_WEIGHT and REID.ATTR_WEIGHT > 0 (a task "
                              "weighted 0 has no gradient to balance), REID.GRADNORM_LR > 0 and REID.GRADNORM_ALPHA >= 0")
