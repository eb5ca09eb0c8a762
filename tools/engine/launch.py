"""Which trainer and hooks a config gets: ``run_training(cfg)`` is what ``run.py --mode train`` runs.

TASK reid / multitask trains with ``tools.engine.reid.ReIDTrainer``; TRAIN.STAGE2 (other than none) with
``Stage2Trainer``; METRIC.BALANCED (always on for stage 2)
adds the balanced-test columns to metrics.csv.
"""
from __future__ import annotations

from typing import Any

from yacs.config import CfgNode as CN

from tools.engine.hooks import EvalHook, HookBase, default_hooks
from tools.engine.reid import ReIDTrainer
from tools.engine.stage2 import Stage2Trainer
from tools.engine.trainer import Trainer
from tools.evaluation.balanced import BALANCED_KEYS, balanced_metrics


class BalancedEvalHook(HookBase):
    """``<val|test>_bal_<metric>`` columns: the balanced-test view of every split just validated."""

    def after_epoch(self, t: Any) -> None:
        for split, res in t.results.items():
            m = balanced_metrics(res.probs, res.labels, seed=t.cfg.METRIC.BALANCED_SEED, score=t.scorer.metrics)
            t.row.update({f"{t.tag(split)}_bal_{k}": m[k] for k in BALANCED_KEYS})


def hooks_for(cfg: CN) -> list[HookBase]:
    """``default_hooks()``, with the balanced view right after the evaluation when it is on."""
    hooks = default_hooks()
    if cfg.METRIC.BALANCED or cfg.TRAIN.STAGE2 != "none":
        at = next(i for i, h in enumerate(hooks) if isinstance(h, EvalHook)) + 1
        hooks.insert(at, BalancedEvalHook())
    return hooks


def trainer_for(cfg: CN, overwrite: bool = False) -> Trainer:
    if cfg.get("TASK", "par") != "par":  # reid / multitask: their own data, model, loss and evaluation hook
        return ReIDTrainer(cfg, overwrite)
    cls = Stage2Trainer if cfg.TRAIN.STAGE2 != "none" else Trainer
    return cls(cfg, overwrite, hooks_for(cfg))


def run_training(cfg: CN, overwrite: bool = False) -> dict:
    """Train per the config (stage 1, or stage 2 when TRAIN.STAGE2 is set); returns the summary."""
    return trainer_for(cfg, overwrite).run()
