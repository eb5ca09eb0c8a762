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

import json
import logging
import time
from typing import Any

import torch
from yacs.config import CfgNode as CN

from batch_engine import ModelEma
from configs.errors import ConfigError
from configs.validate import REID_SELECT
from dataset import build_data, build_loaders, used_splits
from dataset.build import reid_pairs
from dataset.samplers import identity_lookup
from losses import build_loss
from losses.multitask import build_task_loss
from models import build_model
from models.reid_model import attribute_view
from tools.checkpoint import save_checkpoint
from tools.device import barrier
from tools.engine.build import build_optimizer, build_scheduler, oom_error, place_model, reload_weights
from tools.engine.hooks import (CheckpointHook, HookBase, LogitUpdateHook, LRScheduleHook, MetricsWriterHook,
                                TensorBoardHook)
from tools.engine.trainer import Trainer
from tools.evaluation.decision import choose_decision
from tools.evaluation.embedding import (QUERIES_FILE, draw_ranked_lists, embed_loader, retrieval_stats,
                                        write_query_stats)
from tools.evaluation.evaluator import (ContractScorer, evaluate_split, stratified_metrics, stratum_columns,
                                        write_predictions)
from tools.evaluation.metrics import SUMMARY_KEYS
from tools.inference.contract import contract_for_run
from tools.results import scalar_metrics, write_attribute_report, write_json

log = logging.getLogger("train")

REID_KEYS = ("rank1", "rank5", "rank10", "mAP", "mINP")  # metrics.csv columns <val|test>_<key>, fractions
RANKED_LIST_PNG = "ranked_list_best.png"


def selection_metric(cfg: CN) -> str:
    """METRIC.SELECT as a ReID run reads it: TASK reid has no attribute metric, an attribute name means mAP."""
    s = cfg.METRIC.SELECT
    return "mAP" if cfg.TASK == "reid" and s not in REID_SELECT else s


class ReIDEvalHook(HookBase):
    """Every TRAIN.EVAL_EVERY epochs and on the last: retrieval metrics of each pair (and multitask's
    attribute metrics); a new best on val saves best_model.pth, best_metrics.json and the ranked lists."""

    def after_epoch(self, t: Any) -> None:
        cfg, epoch = t.cfg, t.epoch
        if (epoch + 1) % cfg.TRAIN.EVAL_EVERY and epoch + 1 != cfg.TRAIN.MAX_EPOCH:
            return
        t.results, t.strata = {}, {}
        try:
            merged = self._attributes(t) if t.data.attr_names else {}
            embedded, stats = {}, {}
            for tag, (q_split, g_split) in reid_pairs(cfg).items():
                q = embed_loader(t.eval_model, t.loaders[q_split], rt=t.rt, desc=q_split)
                g = embed_loader(t.eval_model, t.loaders[g_split], rt=t.rt, desc=g_split)
                embedded[tag] = (q, g)
                stats[tag] = retrieval_stats(cfg, t.data, q, g)
                m = stats[tag].summary()
                t.row.update({f"{tag}_{k}": m[k] for k in REID_KEYS})
                merged[tag] = {**merged.get(tag, {}), **m}
        except torch.cuda.OutOfMemoryError:
            raise oom_error("TEST.BATCH_SIZE", cfg.TEST.BATCH_SIZE) from None
        t.reports = merged
        val, test = merged["val"], merged.get("test")
        log.info("epoch %d  loss %.4f  %.1f img/s | val mAP %.4f rank-1 %.4f mINP %.4f%s%s", epoch, t.row["train_loss"],
                 t.row["train_images_per_s"], val["mAP"], val["rank1"], val["mINP"],
                 f" | val mA {val['ma']:.4f}" if "ma" in val else "",
                 f" | test mAP {test['mAP']:.4f} rank-1 {test['rank1']:.4f}" if test else "")
        t.score = val[selection_metric(cfg)]
        if t.score > t.state.best:
            t.state.best, t.state.best_epoch = t.score, epoch
            if t.rt.is_main:
                self._save_best(t, embedded, stats)

    def _attributes(self, t: Any) -> dict[str, dict]:
        """Multitask: EvalHook's attribute evaluation of the attribute head, per split."""
        out = {}
        for split in t.eval_splits:
            res = evaluate_split(attribute_view(t.eval_model), t.loaders[split], t.criterion.attrs, scorer=t.scorer,
                                 rt=t.rt, desc=split)
            if split == t.cfg.DATASET.VAL_SPLIT:  # METRIC.DECISION: the thresholds chosen on this validation
                res = choose_decision(t.cfg, t.scorer, res)
            t.results[split] = res
            t.strata[split] = stratified_metrics(t.scorer, t.data, res)
            t.row[f"{t.tag(split)}_loss"] = res.loss
            t.row.update({f"{t.tag(split)}_{k}": v for k, v in scalar_metrics(res.metrics).items()})
            t.row.update(stratum_columns(t.strata[split], t.tag(split)))
            out[t.tag(split)] = scalar_metrics(res.metrics)
        return out

    def _save_best(self, t: Any, embedded: dict, stats: dict) -> None:
        save_checkpoint({"model": t.eval_model.state_dict(), "attr_names": t.data.attr_names,
                         "groups": [[g.name, g.kind, *g.attrs] for g in t.data.groups], "cfg": t.cfg.dump(),
                         "contract": t.contract.to_dict(), "epoch": t.state.best_epoch,
                         "best_metric": t.state.best}, t.exp / "best_model.pth")
        write_json(t.exp / "best_metrics.json", {"epoch": t.state.best_epoch, **t.reports, "strata": t.strata})
        if t.results:  # multitask: the per-attribute report and predictions, as PAR's
            write_attribute_report(t.exp / "attributes_best.csv", t.scorer.attr_names,
                                   {s: r.metrics for s, r in t.results.items()}, t.cfg.VIS.PLOTS)
            for split, res in t.results.items():
                write_predictions(t.exp / f"predictions_best_{split}.npz", t.data, res)
        for tag, st in stats.items():  # per query: what scripts.summarize_reid resamples
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
        self.num_ids = 0
        super().__init__(cfg, overwrite, reid_hooks(cfg) if hooks is None else hooks)

    def _build_data(self) -> None:
        cfg, rt, d = self.cfg, self.rt, self.cfg.DATASET
        data = build_data(cfg)
        if cfg.TASK == "reid":
            data = data.select_attrs([])  # identities only: an attribute file found beside the images is unused
        elif not data.attr_names:
            raise ConfigError(f"TASK multitask: {data.name} has no attribute labels; point DATASET.ATTR_FILE at the "
                              "attribute file, or train identities only with TASK reid")
        self.data = data
        splits = used_splits(cfg, data)
        self.loaders, self.bad = build_loaders(cfg, data, splits, rt.device, rank=rt.rank, world=rt.world)
        self.train_split = d.TRAIN_SPLIT
        self.test_split = d.TEST_SPLIT if d.TEST_SPLIT in splits else ""
        self.eval_splits = [d.VAL_SPLIT] + ([self.test_split] if self.test_split else []) if data.attr_names else []
        self.num_ids = identity_lookup(data.identities, self.loaders[self.train_split].rows)[1]
        log.info("%s, TASK %s: %d training identities, %d attributes; %s", data.name, cfg.TASK, self.num_ids,
                 len(data.attr_names), ", ".join(f"{s} {len(self.loaders[s].rows)} images" for s in splits))

    def _build_model(self) -> None:
        cfg, rt, data = self.cfg, self.rt, self.data
        self.model = build_model(cfg, len(data.attr_names), self.num_ids)
        if cfg.RELOAD.TYPE:
            reload_weights(cfg, self.model, data.attr_names)
        self.net = place_model(cfg, self.model, rt)
        self.ema = ModelEma(self.model, cfg.TRAIN.EMA_DECAY) if cfg.TRAIN.EMA else None
        attrs = (build_loss(cfg, data.attr_names, data.groups, data.label_priors(self.train_split), self.model)
                 if cfg.TASK == "multitask" else None)
        self.criterion = build_task_loss(cfg, self.num_ids, self.model.embed_dim, attrs, self.model).to(rt.device)
        self.optimizer = build_optimizer(cfg, self.model)
        self.scheduler = build_scheduler(cfg, self.optimizer)
        self.scaler = torch.amp.GradScaler("cuda") if rt.amp_dtype == torch.float16 else None
        self.contract = contract_for_run(cfg, data, self.model, self.criterion, list(self.loaders))
        self.scorer = ContractScorer(self.contract, rt.device)

    def _finish(self, t_start: float) -> dict:
        cfg = self.cfg
        barrier(self.rt)  # rank 0 may still be writing best_metrics.json
        best_file = self.exp / "best_metrics.json"
        best = json.loads(best_file.read_text()) if best_file.is_file() else {}
        keys = REID_KEYS + (SUMMARY_KEYS if cfg.TASK == "multitask" else ())
        val, test = best.get("val", {}), best.get("test")
        summary = {"name": cfg.NAME, "dataset": self.data.name, "task": cfg.TASK, "seed": cfg.SEED,
                   "best_epoch": self.state.best_epoch, "epochs": self.state.epoch, "select": selection_metric(cfg),
                   "val": {k: val.get(k) for k in keys}, "test": {k: test.get(k) for k in keys} if test else None,
                   "majority_val": None, "identities_train": self.num_ids,
                   "wall_seconds": round(time.perf_counter() - t_start, 1), "config": str(self.exp / "config.yaml")}
        if self.rt.is_main:
            write_json(self.exp / "summary.json", summary)
        log.info("best epoch %d: val mAP %.4f rank-1 %.4f%s; results in %s", self.state.best_epoch,
                 val.get("mAP", float("nan")), val.get("rank1", float("nan")),
                 f", test mAP {test['mAP']:.4f} rank-1 {test['rank1']:.4f}" if test else "", self.exp)
        return summary


def run_reid_training(cfg: CN, overwrite: bool = False) -> dict:
    """``ReIDTrainer(cfg, overwrite).run()``: what ``run.py --mode train`` runs for TASK reid / multitask."""
    return ReIDTrainer(cfg, overwrite).run()
