"""Trainer hooks (fast-reid's pattern): each does one thing around the epoch loop.

A hook may implement ``before_train``, ``after_epoch`` and ``after_train``; the trainer calls
them in list order with itself (a ``tools.engine.trainer.Trainer``; not imported here, since the
trainer imports this module). ``after_epoch`` hooks see ``trainer.row`` (this epoch's metrics.csv row) and
``trainer.reports`` (this epoch's split metrics, empty when it did not validate).
"""
from __future__ import annotations

import logging
import shutil
from typing import Any
import torch

from tools.checkpoint import save_checkpoint
from tools.engine.build import oom_error
from tools.evaluation.decision import choose_decision
from tools.evaluation.evaluator import evaluate_split, stratified_metrics, stratum_columns, write_predictions
from tools.results import plot_curves, scalar_metrics, write_attribute_report, write_json, write_metrics_csv

log = logging.getLogger("train")


class HookBase:
    def before_train(self, trainer: Any) -> None:
        pass

    def after_epoch(self, trainer: Any) -> None:
        pass

    def after_train(self, trainer: Any) -> None:
        pass


def start_evaluation(t: Any) -> bool:
    """Every TRAIN.EVAL_EVERY epochs and on the last: True, with this epoch's results cleared."""
    due = (t.epoch + 1) % t.cfg.TRAIN.EVAL_EVERY == 0 or t.epoch + 1 == t.cfg.TRAIN.MAX_EPOCH
    if due:
        t.results, t.strata = {}, {}
    return due


def evaluate_attributes(t: Any, model: torch.nn.Module, criterion: torch.nn.Module) -> dict[str, dict]:
    """Each of ``t.eval_splits`` under the run's contract: fills ``t.results``, ``t.strata`` and the row's
    ``<val|test>_*`` columns; returns {split: metrics}."""
    for split in t.eval_splits:
        res = evaluate_split(model, t.loaders[split], criterion, scorer=t.scorer, rt=t.rt, desc=split)
        if split == t.cfg.DATASET.VAL_SPLIT:  # METRIC.DECISION: the thresholds chosen on this validation
            res = choose_decision(t.cfg, t.scorer, res)
        t.results[split] = res
        t.strata[split] = stratified_metrics(t.scorer, t.data, res)
        t.row[f"{t.tag(split)}_loss"] = res.loss
        t.row.update({f"{t.tag(split)}_{k}": v for k, v in scalar_metrics(res.metrics).items()})
        t.row.update(stratum_columns(t.strata[split], t.tag(split)))
    return {s: r.metrics for s, r in t.results.items()}


def keep_if_best(t: Any, metrics: dict) -> bool:
    """The one best-model saver. When ``t.score`` beats the best so far, remember the epoch and (main rank)
    write best_model.pth (weights + inference contract), best_metrics.json ``{"epoch", **metrics, "strata"}``
    and, with attribute results, attributes_best.csv and predictions_best_<split>.npz. True when written."""
    if not t.score > t.state.best:
        return False
    t.state.best, t.state.best_epoch = t.score, t.epoch
    if not t.rt.is_main:
        return False
    save_checkpoint(t.best_state(), t.exp / "best_model.pth")
    write_json(t.exp / "best_metrics.json", {"epoch": t.state.best_epoch, **metrics, "strata": t.strata})
    if t.results:
        write_attribute_report(t.exp / "attributes_best.csv", t.scorer.attr_names,
                               {s: r.metrics for s, r in t.results.items()}, t.cfg.VIS.PLOTS)
        for split, res in t.results.items():
            write_predictions(t.exp / f"predictions_best_{split}.npz", t.data, res)
    return True


class EvalHook(HookBase):
    """Validate (and test) every TRAIN.EVAL_EVERY epochs and on the last; keep the best epoch.

    The steps a task's evaluation overrides (``tools.engine.reid.ReIDEvalHook``): ``evaluate`` (the
    reports), ``select`` (log the epoch, return the selection score), ``best_metrics`` (best_metrics.json)
    and ``after_best`` (files beyond ``keep_if_best``'s)."""

    def after_epoch(self, t: Any) -> None:
        if not start_evaluation(t):
            return
        try:
            t.reports = self.evaluate(t)
        except torch.cuda.OutOfMemoryError:
            raise oom_error("TEST.BATCH_SIZE", t.cfg.TEST.BATCH_SIZE) from None
        t.score = self.select(t)
        if keep_if_best(t, self.best_metrics(t)):
            self.after_best(t)

    def evaluate(self, t: Any) -> dict[str, dict]:
        return evaluate_attributes(t, t.inference_model, t.criterion)

    def select(self, t: Any) -> float:
        val, test = t.reports[t.cfg.DATASET.VAL_SPLIT], t.reports.get(t.test_split)
        log.info("epoch %d  loss %.4f  %.1f img/s | val mA %.4f F1 %.4f%s", t.epoch, t.row["train_loss"],
                 t.row["train_images_per_s"], val["ma"], val["instance_f1"],
                 f" | test mA {test['ma']:.4f}" if test else "")
        return val[t.cfg.METRIC.SELECT]

    def best_metrics(self, t: Any) -> dict:
        return {s: scalar_metrics(m) for s, m in t.reports.items()}

    def after_best(self, t: Any) -> None:
        pass


class LogitUpdateHook(HookBase):
    """The seed study's logit update reads each validation's per-attribute recalls."""

    def after_epoch(self, t: Any) -> None:
        if not t.reports:
            return
        val = t.reports[t.cfg.DATASET.VAL_SPLIT]
        # recalls of every trained attribute: recomputed only when the report covers a subset (or, multitask,
        # holds ReID metrics)
        if t.scorer.contract.eval_attrs or "per_attr" not in val:
            res = t.results[t.cfg.DATASET.VAL_SPLIT]
            val = t.scorer.metrics(res.probs, res.labels, every_attr=True)
        t.criterion.on_validation_end(val["per_attr"]["pos_recall"], val["per_attr"]["neg_recall"])


class LRScheduleHook(HookBase):
    """Step the LR schedule once an epoch (plateau: on the validation score, when there is one)."""

    def after_epoch(self, t: Any) -> None:
        s = t.scheduler
        if isinstance(s, torch.optim.lr_scheduler.ReduceLROnPlateau):
            if t.reports:
                s.step(t.score)
        elif s is not None:
            s.step()


class CheckpointHook(HookBase):
    """last.pth after every epoch: everything a bit-identical resume needs."""

    def after_epoch(self, t: Any) -> None:
        if t.rt.is_main:
            t.save_last()


class MetricsWriterHook(HookBase):
    """metrics.csv and curves.png, rewritten every epoch (a resume rewrites them from the history)."""

    def before_train(self, t: Any) -> None:
        if t.rt.is_main and t.state.history:  # a kill between last.pth and metrics.csv left the csv behind
            write_metrics_csv(t.exp / "metrics.csv", t.state.history)

    def after_epoch(self, t: Any) -> None:
        if not t.rt.is_main:
            return
        write_metrics_csv(t.exp / "metrics.csv", t.state.history)
        if t.cfg.VIS.PLOTS:
            plot_curves(t.exp / "curves.png", t.state.history)


class TensorBoardHook(HookBase):
    def __init__(self):
        self.writer = None

    def before_train(self, t: Any) -> None:
        if t.cfg.VIS.TENSORBOARD and t.rt.is_main:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(t.exp / "tensorboard"))

    def after_epoch(self, t: Any) -> None:
        if self.writer is None:
            return
        for k, v in t.row.items():
            if isinstance(v, (int, float)) and k != "epoch":
                self.writer.add_scalar(k.replace("_", "/", 1), v, t.epoch)
        self.writer.flush()

    def after_train(self, t: Any) -> None:
        if self.writer is not None:
            self.writer.close()


def default_hooks() -> list[HookBase]:
    """In order: evaluation (best checkpoint), logit update, LR schedule, last.pth, metrics files, TensorBoard."""
    return [EvalHook(), LogitUpdateHook(), LRScheduleHook(), CheckpointHook(), MetricsWriterHook(), TensorBoardHook()]


def clear_run_files(exp, names) -> None:
    """--overwrite: remove a previous run's files (and its tensorboard/) from ``exp``."""
    for name in names:
        (exp / name).unlink(missing_ok=True)
    for pattern in ("predictions_best_*.npz",):
        for p in exp.glob(pattern):
            p.unlink()
    shutil.rmtree(exp / "tensorboard", ignore_errors=True)
