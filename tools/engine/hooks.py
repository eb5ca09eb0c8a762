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


class EvalHook(HookBase):
    """Validate (and test) every TRAIN.EVAL_EVERY epochs and on the last; write the best epoch."""

    def after_epoch(self, t: Any) -> None:
        cfg, epoch = t.cfg, t.epoch
        if (epoch + 1) % cfg.TRAIN.EVAL_EVERY and epoch + 1 != cfg.TRAIN.MAX_EPOCH:
            return
        t.results, t.strata = {}, {}
        for split in t.eval_splits:
            try:
                res = evaluate_split(t.eval_model, t.loaders[split], t.criterion, scorer=t.scorer, rt=t.rt,
                                     desc=split)
            except torch.cuda.OutOfMemoryError:
                from tools.engine.build import oom_error

                raise oom_error("TEST.BATCH_SIZE", cfg.TEST.BATCH_SIZE) from None
            if split == cfg.DATASET.VAL_SPLIT:  # METRIC.DECISION: the thresholds chosen on this validation
                res = choose_decision(cfg, t.scorer, res)
            t.results[split] = res
            t.strata[split] = stratified_metrics(t.scorer, t.data, res)
            t.row[f"{t.tag(split)}_loss"] = res.loss
            t.row.update({f"{t.tag(split)}_{k}": v for k, v in scalar_metrics(res.metrics).items()})
            t.row.update(stratum_columns(t.strata[split], t.tag(split)))
        t.reports = {s: r.metrics for s, r in t.results.items()}
        val = t.reports[cfg.DATASET.VAL_SPLIT]
        test = t.reports.get(t.test_split)
        log.info("epoch %d  loss %.4f  %.1f img/s | val mA %.4f F1 %.4f%s", epoch, t.row["train_loss"],
                 t.row["train_images_per_s"], val["ma"], val["instance_f1"],
                 f" | test mA {test['ma']:.4f}" if test else "")
        t.score = val[cfg.METRIC.SELECT]
        if t.score > t.state.best:
            t.state.best, t.state.best_epoch = t.score, epoch
            if t.rt.is_main:
                self._save_best(t)

    def _save_best(self, t: Any) -> None:
        save_checkpoint({"model": t.eval_model.state_dict(), "attr_names": t.data.attr_names,
                         "groups": [[g.name, g.kind, *g.attrs] for g in t.data.groups], "cfg": t.cfg.dump(),
                         "contract": t.contract.to_dict(), "epoch": t.state.best_epoch,
                         "best_metric": t.state.best}, t.exp / "best_model.pth")
        write_attribute_report(t.exp / "attributes_best.csv", t.scorer.attr_names, t.reports, t.cfg.VIS.PLOTS)
        write_json(t.exp / "best_metrics.json", {"epoch": t.state.best_epoch,
                                                 **{s: scalar_metrics(m) for s, m in t.reports.items()},
                                                 "strata": t.strata})
        for split, res in t.results.items():
            write_predictions(t.exp / f"predictions_best_{split}.npz", t.data, res)


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
