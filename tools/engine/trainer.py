"""The Trainer: builds a run from its config, loops over epochs and hands the rest to hooks.

    summary = Trainer(cfg).run()

Evaluation, checkpoints, the LR schedule, the logit update, metrics files and TensorBoard are
hooks (``tools.engine.hooks``); stop signals end the epoch after the current step. Everything a
resume needs is ``TrainState.state_dict()`` plus the modules' own state dicts in ``last.pth``.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from yacs.config import CfgNode as CN

from configs.errors import ConfigError, UserError
from dataset import build_data, build_loaders, used_splits
from dataset.base import PARData
from losses import build_loss
from models import build_model
from models.tta import flip_averaged
from tools.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from tools.device import barrier, broadcast_from_main, mean_across_ranks, setup_runtime
from tools.engine.build import build_optimizer, build_scheduler, oom_error, place_model, reload_weights, seed_everything
from tools.engine.hooks import HookBase, clear_run_files, default_hooks
from tools.engine.loop import ModelEma, NonFiniteLoss, StepOptions, StopRequest, train_one_epoch
from tools.evaluation.evaluator import ContractScorer
from tools.evaluation.metrics import SUMMARY_KEYS, majority_baseline
from tools.inference.contract import contract_for_run
from tools.results import experiment_dir, scalar_metrics, setup_logging, write_json

log = logging.getLogger("train")

# What a run writes into its experiment folder; --overwrite removes these (and tensorboard/) first.
RUN_FILES = ("last.pth", "best_model.pth", "summary.json", "best_metrics.json", "metrics.csv", "log.txt",
             "curves.png", "attributes_best.csv", "attributes_best.png")


class ExperimentExists(UserError, RuntimeError):
    """The experiment folder already holds a run (finished, or stopped and resumable)."""


@dataclass
class TrainState:
    """Where the run is: epochs done, the step inside an interrupted epoch, the best epoch, the history."""

    epoch: int = 0
    step: int = 0
    partial: dict | None = None  # running totals of an interrupted epoch
    best: float = -1.0
    best_epoch: int = -1
    history: list[dict] = field(default_factory=list)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "step": self.step, "partial": self.partial, "best_metric": self.best,
                "best_epoch": self.best_epoch, "history": list(self.history)}

    def load_state_dict(self, d: dict) -> None:
        self.epoch, self.step, self.partial = d["epoch"], d["step"], d.get("partial")
        self.best, self.best_epoch, self.history = d["best_metric"], d["best_epoch"], list(d["history"])


def claim_folder(exp: Path, overwrite: bool) -> None:
    """A fresh run never silently replaces a finished run, nor one that was stopped and can be resumed."""
    finished, stopped = (exp / "summary.json").is_file(), (exp / "last.pth").is_file()
    if not (finished or stopped):
        return
    if not overwrite:
        what = "a finished run" if finished else "a stopped run (last.pth) that can be resumed"
        raise ExperimentExists(f"{exp} already holds {what}; set TRAIN.RESUME auto to continue it, "
                               "choose another NAME, or pass --overwrite to replace it")
    clear_run_files(exp, RUN_FILES)
    log.warning("--overwrite: removed the previous run's results from %s", exp)


def resume_path(cfg: CN, exp: Path) -> Path | None:
    r = cfg.TRAIN.RESUME
    if not r:
        return None
    if r == "auto":
        p = exp / "last.pth"
        if not p.is_file():
            log.info("TRAIN.RESUME auto: no %s yet, starting fresh", p)
            return None
        return p
    if not Path(r).is_file():
        raise CheckpointError(f"TRAIN.RESUME = {r!r}: file not found (use auto or a path to a last.pth)")
    return Path(r)


class Trainer:
    """One training run of ``cfg``; ``hooks`` default to ``default_hooks()``."""

    TASKS = ("par",)  # the TASK values this class trains (tools.engine.reid.ReIDTrainer: reid, multitask)

    def __init__(self, cfg: CN, overwrite: bool = False, hooks: list[HookBase] | None = None):
        if cfg.get("TASK", "par") not in self.TASKS:
            raise ConfigError(f"TASK {cfg.TASK} trains with tools.engine.reid.ReIDTrainer, not {type(self).__name__}; "
                              "train through tools.engine.run_training (it picks the trainer) or set TASK par")
        self.cfg, self.rt = cfg, setup_runtime(cfg)
        self.exp = experiment_dir(cfg)
        self._resume_from = resume_path(cfg, self.exp)
        self._claim(overwrite)
        setup_logging(self.exp, cfg.REDIRECTOR, self.rt.is_main)
        if self.rt.is_main:
            (self.exp / "config.yaml").write_text(cfg.dump())
        log.info("experiment %s on %s (AMP %s, world %d)", self.exp, self.rt.device, self.rt.amp_dtype, self.rt.world)
        seed_everything(cfg.SEED, cfg.DETERMINISTIC)
        self.num_ids = 0  # identity classes (ReIDTrainer), counted from the training loader
        self.build()
        self.state = TrainState()
        self.hooks = default_hooks() if hooks is None else hooks
        self.epoch, self.row, self.reports, self.results, self.score = 0, {}, {}, {}, float("nan")
        self.strata: dict = {}  # split -> {stratum: {level: metrics}} of the last validation

    # ------------------------------------------------------------------ building
    def _claim(self, overwrite: bool) -> None:
        refused = None
        if self.rt.is_main and self._resume_from is None:
            try:
                claim_folder(self.exp, overwrite)
            except ExperimentExists as e:
                refused = str(e)
        refused = broadcast_from_main(self.rt, refused)  # every DDP rank stops, not only rank 0
        if refused:
            raise ExperimentExists(refused)

    def build(self) -> None:
        """The build sequence; a subclass overrides the ``build_*`` steps it changes (as fast-reid's
        DefaultTrainer), never the sequence."""
        cfg, rt = self.cfg, self.rt
        self.data = self.build_data()
        splits = used_splits(cfg, self.data)
        self.loaders, self.bad = build_loaders(cfg, self.data, splits, rt.device, rank=rt.rank, world=rt.world)
        self.train_split = cfg.DATASET.TRAIN_SPLIT
        self.test_split = cfg.DATASET.TEST_SPLIT if cfg.DATASET.TEST_SPLIT in splits else ""
        self.eval_splits = ([cfg.DATASET.VAL_SPLIT] + ([self.test_split] if self.test_split else [])
                            if self.data.attr_names else [])
        self.data_built(splits)
        self.model = self.build_model()
        self.net, self.ema = self.build_net(), self.build_ema()
        self.criterion = self.build_criterion().to(rt.device)
        self.optimizer = self.build_optimizer()
        self.scheduler = build_scheduler(cfg, self.optimizer)
        self.scaler = torch.amp.GradScaler("cuda") if rt.amp_dtype == torch.float16 else None
        self.contract = contract_for_run(cfg, self.data, self.model, self.criterion, list(self.loaders))
        self.scorer = ContractScorer(self.contract, rt.device)

    def build_data(self) -> PARData:
        return build_data(self.cfg)

    def data_built(self, splits: list[str]) -> None:
        """After the loaders: say what the run trains on."""
        log.info("%s: %d attributes; %s", self.data.name, len(self.data.attr_names),
                 ", ".join(f"{s} {len(self.loaders[s].rows)} images" for s in splits))

    def build_model(self) -> nn.Module:
        """The config's model, RELOAD's weights loaded when RELOAD.TYPE is on."""
        model = build_model(self.cfg, len(self.data.attr_names), self.num_ids)
        if self.cfg.RELOAD.TYPE:
            reload_weights(self.cfg, model, self.data.attr_names)
        return model

    def build_net(self) -> nn.Module:
        """The network the loop runs: the model on the device, DDP / compile wrapped."""
        return place_model(self.cfg, self.model, self.rt)

    def build_ema(self) -> ModelEma | None:
        return ModelEma(self.model, self.cfg.TRAIN.EMA_DECAY) if self.cfg.TRAIN.EMA else None

    def attribute_loss(self) -> nn.Module:
        """LOSS.* over the attributes, with the training split's label priors."""
        data = self.data
        return build_loss(self.cfg, data.attr_names, data.groups, data.label_priors(self.train_split), self.model)

    def build_criterion(self) -> nn.Module:
        return self.attribute_loss()

    def build_optimizer(self) -> torch.optim.Optimizer:
        return build_optimizer(self.cfg, self.model)

    def step_options(self) -> StepOptions:
        """How each optimisation step runs: device, AMP, grad scaler, clipping, EMA, non-finite policy."""
        cfg, rt = self.cfg, self.rt
        return StepOptions(device=rt.device, amp_dtype=rt.amp_dtype, scaler=self.scaler, ema=self.ema,
                           clip_norm=cfg.TRAIN.CLIP_NORM if cfg.TRAIN.CLIP_GRAD else 0.0,
                           on_nonfinite=cfg.TRAIN.ON_NONFINITE)

    @property
    def eval_model(self) -> torch.nn.Module:
        """The weights evaluated and saved: the EMA copy when on, else the model."""
        return self.ema.module if self.ema is not None else self.model

    @property
    def inference_model(self) -> torch.nn.Module:
        """``eval_model`` as the checkpoint's contract will run it (TEST.FLIP: crop and mirror averaged)."""
        return flip_averaged(self.eval_model, bool(self.cfg.TEST.FLIP))

    def tag(self, split: str) -> str:
        """Column prefix: 'val' / 'test' whatever the split is called."""
        return "val" if split == self.cfg.DATASET.VAL_SPLIT else "test"

    # ------------------------------------------------------------------ state
    def _modules(self) -> dict:
        return {"model": self.model, "optimizer": self.optimizer, "scheduler": self.scheduler,
                "scaler": self.scaler, "ema": self.ema.module if self.ema is not None else None,
                "criterion": self.criterion}

    def _meta(self) -> dict:
        """What every checkpoint of the run carries beside the weights: labels, config, inference contract."""
        return {"attr_names": self.data.attr_names, "groups": [[g.name, g.kind, *g.attrs] for g in self.data.groups],
                "cfg": self.cfg.dump(), "contract": self.contract.to_dict()}

    def best_state(self) -> dict:
        """best_model.pth: the evaluated weights (EMA when on) of the best epoch."""
        return {"model": self.eval_model.state_dict(), **self._meta(), "epoch": self.state.best_epoch,
                "best_metric": self.state.best}

    def save_last(self) -> None:
        state = {k: (m.state_dict() if m is not None else None) for k, m in self._modules().items()}
        state.update(**self._meta(), rng={"torch": torch.get_rng_state()}, **self.state.state_dict())
        save_checkpoint(state, self.exp / "last.pth")

    def resume(self, path: Path) -> None:
        ck = load_checkpoint(path)
        try:
            for key, module in self._modules().items():
                if module is not None and (ck.get(key) is not None or key in ("model", "optimizer", "criterion")):
                    module.load_state_dict(ck[key])
            torch.set_rng_state(ck["rng"]["torch"])
            self.state.load_state_dict(ck)
        except (KeyError, RuntimeError, ValueError, TypeError) as e:
            why = " ".join(line.strip() for line in str(e).splitlines() if line.strip())[:200]  # names the keys
            raise CheckpointError(f"TRAIN.RESUME: {path} does not fit this run ({type(e).__name__}: {why}); resume "
                                  f"with the config it was written with ({path.parent / 'config.yaml'}), or start "
                                  "fresh in another NAME") from None
        log.info("resumed from %s at epoch %d step %d", path, ck["epoch"], ck["step"])

    # ------------------------------------------------------------------ the loop
    def run(self) -> dict:
        """Train per the config; returns the summary also written to ``summary.json``."""
        if self._resume_from is not None:
            self.resume(self._resume_from)
        for h in self.hooks:
            h.before_train(self)
        t_start, cfg = time.perf_counter(), self.cfg
        if self.state.epoch >= cfg.TRAIN.MAX_EPOCH:
            log.info("nothing to do: already trained %d of %d epochs", self.state.epoch, cfg.TRAIN.MAX_EPOCH)
        else:
            log.info("training epochs %d-%d; Ctrl-C (or SIGTERM) stops after the current step and saves last.pth",
                     self.state.epoch, cfg.TRAIN.MAX_EPOCH - 1)
        with StopRequest() as stop:
            for epoch in range(self.state.epoch, cfg.TRAIN.MAX_EPOCH):
                self.run_epoch(epoch, stop)
                if stop.requested and epoch + 1 < cfg.TRAIN.MAX_EPOCH:  # a signal during validation / saving
                    raise KeyboardInterrupt(self._resume_hint(epoch + 1, 0))
        for h in self.hooks:
            h.after_train(self)
        return self._finish(t_start)

    def run_epoch(self, epoch: int, stop: StopRequest) -> None:
        """Train one epoch, then run every hook's ``after_epoch``."""
        self.epoch, self.reports, self.results = epoch, {}, {}
        res = self._train_epoch(epoch, stop)
        if res.interrupted:
            self.state.epoch, self.state.step, self.state.partial = epoch, res.last_step, res.carry()
            if self.rt.is_main:
                self.save_last()
            raise KeyboardInterrupt(self._resume_hint(epoch, res.last_step))
        self.state.step, self.state.partial = 0, None
        self.row = self._epoch_row(res)
        if self.bad.skipped:
            log.warning("epoch %d: %d bad image(s) skipped so far", epoch, len(self.bad.skipped))
        self.state.history.append(self.row)  # hooks complete this row in place (validation columns)
        self.state.epoch = epoch + 1
        for h in self.hooks:
            h.after_epoch(self)

    def _train_epoch(self, epoch: int, stop: StopRequest):
        cfg, rt = self.cfg, self.rt
        self.loaders[self.train_split].set_epoch(epoch, self.state.step)
        opt = self.step_options()
        try:
            return train_one_epoch(self.net, self.loaders[self.train_split], self.criterion, self.optimizer, opt=opt,
                                   epoch=epoch, log_every=cfg.TRAIN.LOG_EVERY, stop=stop, start_step=self.state.step,
                                   carry=self.state.partial, progress=rt.is_main)
        except torch.cuda.OutOfMemoryError:
            raise oom_error("TRAIN.BATCH_SIZE", cfg.TRAIN.BATCH_SIZE) from None
        except NonFiniteLoss as e:
            last = self.exp / "last.pth"
            kept = (f"last good checkpoint: {last} ({self.state.epoch} epoch(s) done)" if last.is_file()
                    else "no checkpoint was written before it")
            raise NonFiniteLoss(f"{e} [{kept}]") from None

    def _epoch_row(self, res) -> dict:
        if self.rt.distributed:  # the ranks trained on equal slices of the same global batches
            keys = list(res.parts)
            res.loss, *vals = mean_across_ranks(self.rt, [res.loss, *res.parts.values()])
            res.parts = dict(zip(keys, vals))
            res.images *= self.rt.world  # global throughput
        row = {"epoch": self.epoch, "lr": float(self.optimizer.param_groups[-1]["lr"]), "train_loss": res.loss,
               "train_images_per_s": res.images_per_s, "train_seconds": res.seconds,
               "skipped_steps": res.skipped_steps, "bad_images": len(self.bad.skipped)}
        row.update({f"train_{k}": v for k, v in res.parts.items()})
        return row

    def _resume_hint(self, epoch: int, step: int) -> str:
        return (f"stopped at epoch {epoch}, step {step}; {self.exp / 'last.pth'} saved. Resume with: "
                f"uv run run.py --config-file {self.exp / 'config.yaml'} TRAIN.RESUME auto")

    def _finish(self, t_start: float) -> dict:
        """summary.json: the run, its best epoch's metrics (``summary_metrics``), its wall time."""
        cfg = self.cfg
        barrier(self.rt)  # rank 0 may still be writing best_metrics.json
        best_file = self.exp / "best_metrics.json"
        best = json.loads(best_file.read_text()) if best_file.is_file() else {}
        summary = {"name": cfg.NAME, "dataset": self.data.name, "seed": cfg.SEED, "best_epoch": self.state.best_epoch,
                   "epochs": self.state.epoch, **self.summary_metrics(best),
                   "wall_seconds": round(time.perf_counter() - t_start, 1), "config": str(self.exp / "config.yaml")}
        if self.rt.is_main:
            write_json(self.exp / "summary.json", summary)
        log.info("best epoch %d: %s; results in %s", self.state.best_epoch, self.best_line(summary), self.exp)
        return summary

    def summary_metrics(self, best: dict) -> dict:
        """The summary's selection metric, val / test metrics (SUMMARY_KEYS) and the majority baseline."""
        cfg = self.cfg
        val = best.get(cfg.DATASET.VAL_SPLIT, {})
        test = best.get(cfg.DATASET.TEST_SPLIT) if cfg.DATASET.TEST_SPLIT else None
        majority = majority_baseline(self.data.split_labels(self.train_split),
                                     self.data.labels[self.loaders[cfg.DATASET.VAL_SPLIT].rows])
        return {"select": cfg.METRIC.SELECT, "val": {k: val.get(k) for k in SUMMARY_KEYS},
                "test": {k: test.get(k) for k in SUMMARY_KEYS} if test else None,
                "majority_val": {k: v for k, v in scalar_metrics(majority).items() if k in SUMMARY_KEYS}}

    def best_line(self, summary: dict) -> str:
        val, test = summary["val"], summary["test"]
        ma = val.get("ma")
        return f"val mA {float('nan') if ma is None else ma:.4f}" + (f", test mA {test['ma']:.4f}" if test else "")
