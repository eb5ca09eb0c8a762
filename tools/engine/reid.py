"""TASK reid / multitask training: ``ReIDTrainer`` (a Trainer) and ``ReIDEvalHook``.

    summary = ReIDTrainer(cfg).run()        # what run.py runs when TASK is not par

What differs from PAR training, and nothing else does (loop, resume, AMP/DDP, schedules, EMA):
  * data: the training loader draws PK batches (P identities x REID.NUM_INSTANCE images,
    ``dataset.samplers.PKSampler``) and yields ``{"attrs", "ids"}`` targets; TASK reid drops any
    attribute labels;
  * model / loss: ``models.reid_model.ReIDModel`` and ``losses.multitask.TaskCriterion``;
  * evaluation: ``ReIDEvalHook`` embeds each (query, gallery) pair of ``dataset.build.REID_PAIRS``
    (val: val_query / val_gallery, cut from the training identities; test: query / gallery) and
    writes ``<val|test>_<rank1|rank5|rank10|mAP|mINP>`` (fractions) per epoch in metrics.csv; for
    multitask it also evaluates the attribute head as EvalHook does (``<val|test>_ma`` ...). The best
    epoch is chosen on val only (METRIC.SELECT; reid reads an attribute metric there as mAP); it writes
    best_model.pth (with the inference contract), best_metrics.json ``{"val": {...}, "test": {...}}``
    and ranked_list_best.png (REID.VIS_QUERIES test queries, top-10).
"""
from __future__ import annotations

import logging
from typing import Any

import torch
from yacs.config import CfgNode as CN

from configs.errors import ConfigError
from configs.validate import REID_SELECT
from dataset import build_data
from dataset.base import PARData
from dataset.build import reid_pairs
from dataset.samplers import identity_lookup
from losses.multitask import build_task_loss
from models.reid_model import attribute_view
from tools.engine.hooks import (CheckpointHook, EvalHook, HookBase, LogitUpdateHook, LRScheduleHook,
                                MetricsWriterHook, TensorBoardHook, evaluate_attributes)
from tools.engine.trainer import Trainer
from tools.evaluation.embedding import (QUERIES_FILE, draw_ranked_lists, embed_loader, retrieval_stats,
                                        write_query_stats)
from tools.evaluation.metrics import SUMMARY_KEYS
from tools.results import scalar_metrics

log = logging.getLogger("train")

REID_KEYS = ("rank1", "rank5", "rank10", "mAP", "mINP")  # metrics.csv columns <val|test>_<key>, fractions
RANKED_LIST_PNG = "ranked_list_best.png"


def selection_metric(cfg: CN) -> str:
    """METRIC.SELECT as a ReID run reads it: TASK reid has no attribute metric, an attribute name means mAP."""
    s = cfg.METRIC.SELECT
    return "mAP" if cfg.TASK == "reid" and s not in REID_SELECT else s


class ReIDEvalHook(EvalHook):
    """EvalHook for TASK reid / multitask: retrieval metrics of each (query, gallery) pair (and multitask's
    attribute metrics); a new best on val also writes the per-query files and the ranked lists."""

    def __init__(self):
        self._embedded: dict = {}
        self._stats: dict = {}

    def evaluate(self, t: Any) -> dict[str, dict]:
        attrs = evaluate_attributes(t, attribute_view(t.inference_model), t.criterion.attrs) if t.eval_splits else {}
        merged = {t.tag(s): scalar_metrics(m) for s, m in attrs.items()}
        self._embedded, self._stats = self._retrieval(t, merged)
        return merged

    def select(self, t: Any) -> float:
        val, test = t.reports["val"], t.reports.get("test")
        log.info("epoch %d  loss %.4f  %.1f img/s | val mAP %.4f rank-1 %.4f mINP %.4f%s%s", t.epoch,
                 t.row["train_loss"], t.row["train_images_per_s"], val["mAP"], val["rank1"], val["mINP"],
                 f" | val mA {val['ma']:.4f}" if "ma" in val else "",
                 f" | test mAP {test['mAP']:.4f} rank-1 {test['rank1']:.4f}" if test else "")
        return val[selection_metric(t.cfg)]

    def best_metrics(self, t: Any) -> dict:
        return t.reports

    def after_best(self, t: Any) -> None:
        self._save_retrieval(t, self._embedded, self._stats)

    def _retrieval(self, t: Any, merged: dict) -> tuple[dict, dict]:
        """Embed each (query, gallery) pair; its metrics go into the row and ``merged[tag]``."""
        embedded, stats = {}, {}
        for tag, (q_split, g_split) in reid_pairs(t.cfg).items():
            q = embed_loader(t.inference_model, t.loaders[q_split], rt=t.rt, desc=q_split)
            g = embed_loader(t.inference_model, t.loaders[g_split], rt=t.rt, desc=g_split)
            embedded[tag] = (q, g)
            stats[tag] = retrieval_stats(t.cfg, t.data, q, g)
            m = stats[tag].summary()
            t.row.update({f"{tag}_{k}": m[k] for k in REID_KEYS})
            merged[tag] = {**merged.get(tag, {}), **m}
        return embedded, stats

    def _save_retrieval(self, t: Any, embedded: dict, stats: dict) -> None:
        """Per query: what scripts.summarize_reid resamples; the ranked lists of the test (else val) pair."""
        for tag, st in stats.items():
            write_query_stats(t.exp / QUERIES_FILE.format(which="best", tag=tag), st, embedded[tag][0][1], t.data)
        q, g = embedded["test"] if "test" in embedded else embedded["val"]
        draw_ranked_lists(t.exp / RANKED_LIST_PNG, t.cfg, t.data, q, g)


def reid_hooks(cfg: CN) -> list[HookBase]:
    """default_hooks() with ReIDEvalHook in EvalHook's place (the logit update only for multitask)."""
    hooks: list[HookBase] = [ReIDEvalHook()] + ([LogitUpdateHook()] if cfg.TASK == "multitask" else [])
    return hooks + [LRScheduleHook(), CheckpointHook(), MetricsWriterHook(), TensorBoardHook()]


class ReIDTrainer(Trainer):
    """One TASK reid / multitask run of ``cfg``; ``hooks`` default to ``reid_hooks(cfg)``."""

    TASKS = ("reid", "multitask")

    def __init__(self, cfg: CN, overwrite: bool = False, hooks: list[HookBase] | None = None):
        super().__init__(cfg, overwrite, reid_hooks(cfg) if hooks is None else hooks)

    def build_data(self) -> PARData:
        data = build_data(self.cfg)
        if self.cfg.TASK == "reid":
            return data.select_attrs([])  # identities only: an attribute file found beside the images is unused
        if not data.attr_names:
            raise ConfigError(f"TASK multitask: {data.name} has no attribute labels; point DATASET.ATTR_FILE at the "
                              "attribute file, or train identities only with TASK reid")
        return data

    def data_built(self, splits: list[str]) -> None:
        self.num_ids = identity_lookup(self.data.identities, self.loaders[self.train_split].rows)[1]
        log.info("%s, TASK %s: %d training identities, %d attributes; %s", self.data.name, self.cfg.TASK,
                 self.num_ids, len(self.data.attr_names),
                 ", ".join(f"{s} {len(self.loaders[s].rows)} images" for s in splits))

    def build_criterion(self) -> torch.nn.Module:
        """The identity and metric losses, plus (multitask) the attribute loss."""
        attrs = self.attribute_loss() if self.cfg.TASK == "multitask" else None
        return build_task_loss(self.cfg, self.num_ids, self.model.embed_dim, attrs, self.model)

    def summary_metrics(self, best: dict) -> dict:
        """Retrieval metrics (REID_KEYS; multitask adds SUMMARY_KEYS) of val / test, the training identities."""
        cfg = self.cfg
        keys = REID_KEYS + (SUMMARY_KEYS if cfg.TASK == "multitask" else ())
        val, test = best.get("val", {}), best.get("test")
        return {"task": cfg.TASK, "select": selection_metric(cfg), "val": {k: val.get(k) for k in keys},
                "test": {k: test.get(k) for k in keys} if test else None, "majority_val": None,
                "identities_train": self.num_ids}

    def best_line(self, summary: dict) -> str:
        val, test = ({k: float("nan") if v is None else v for k, v in (m or {}).items()}
                     for m in (summary["val"], summary["test"]))
        return (f"val mAP {val['mAP']:.4f} rank-1 {val['rank1']:.4f}"
                + (f", test mAP {test['mAP']:.4f} rank-1 {test['rank1']:.4f}" if summary["test"] else ""))
