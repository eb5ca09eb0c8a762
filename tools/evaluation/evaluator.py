"""Evaluation of a model on a split under an inference contract, for training and ``--mode eval``.

Both paths compute probabilities with the contract's ``ProbabilityHead``, threshold them with its
per-attribute thresholds and decode exclusive groups the way it says, so ``--mode eval`` on a
saved ``best_model.pth`` reproduces the metrics training reported for that epoch.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from yacs.config import CfgNode as CN

from dataset import build_data, build_loaders
from dataset.base import PARData
from losses import build_loss
from models.reid_model import attribute_view
from tools.checkpoint import CheckpointError
from tools.device import Runtime, gather_arrays, mean_across_ranks, setup_runtime
from tools.evaluation.cross_domain import evaluate_cross_domain
from tools.evaluation.embedding import pair_metrics, reid_eval_data
from tools.evaluation.forward import validate
from tools.evaluation.metrics import compute_metrics, decode_exclusive
from tools.inference.contract import InferenceContract, ProbabilityHead, split_fingerprint
from tools.inference.loading import experiment_dir, load_for_inference, resolve_checkpoint
from tools.results import scalar_metrics, setup_logging, write_attribute_report, write_json

log = logging.getLogger("eval")


@dataclass
class SplitResult:
    metrics: dict
    loss: float
    probs: np.ndarray  # (N, A) probabilities before group decoding
    labels: np.ndarray
    rows: np.ndarray  # row indices into the dataset


class ContractScorer:
    """Logits -> probabilities -> metrics, as a contract prescribes."""

    def __init__(self, contract: InferenceContract, device: torch.device):
        self.contract = contract
        self.to_probs = ProbabilityHead(contract).to(device)

    @property
    def attr_names(self) -> list[str]:
        """The attributes the metrics cover (``contract.eval_attrs``, else every trained one)."""
        return list(self.contract.eval_attrs or self.contract.attr_names)

    def metrics(self, probs: np.ndarray, labels: np.ndarray, every_attr: bool = False) -> dict:
        """Group decoding over every attribute, then the metrics of the evaluated ones (or of all)."""
        c = self.contract
        idx = c.exclusive_indices()
        decided = decode_exclusive(probs, idx) if idx else probs
        cols = [c.attr_names.index(a) for a in c.eval_attrs] if c.eval_attrs and not every_attr else slice(None)
        return compute_metrics(decided[:, cols], labels[:, cols], c.threshold_array()[cols])


def evaluate_split(net: torch.nn.Module, loader, criterion, *, scorer: ContractScorer, rt: Runtime,
                   desc: str = "eval") -> SplitResult:
    """Run ``net`` over ``loader`` (every DDP rank its shard) and score the whole split."""
    probs, labels, rows, loss = validate(net, loader, criterion, to_probs=scorer.to_probs, device=rt.device,
                                         amp_dtype=rt.amp_dtype, desc=desc, progress=rt.is_main)
    loss, = mean_across_ranks(rt, [loss], [len(probs)])  # each rank saw its shard of the split
    probs, labels, rows = gather_arrays(rt, probs, labels, rows)
    return SplitResult(scorer.metrics(probs, labels), loss, probs, labels, rows)


STRATUM_KEYS = ("ma", "ma_rethinking", "n_attrs_evaluated", "n_samples", "instance_f1")


def stratified_metrics(scorer: ContractScorer, data: PARData, result: SplitResult) -> dict:
    """{stratum: {level: metrics}} on the images of each level (e.g. NATIVE's quality high / normal / low)."""
    out = {}
    for name, levels in data.strata.items():
        per_image = levels[result.rows]
        out[name] = {}
        for level in sorted(set(per_image.tolist())):
            keep = per_image == level
            m = scorer.metrics(result.probs[keep], result.labels[keep])
            out[name][level] = {k: m[k] for k in STRATUM_KEYS}
    return out


def stratum_columns(strata: dict, prefix: str) -> dict:
    """Flat metrics.csv columns: ``<prefix>_ma_<stratum>_<level>`` and ``<prefix>_n_<stratum>_<level>``."""
    cols = {}
    for name, levels in strata.items():
        for level, m in levels.items():
            cols[f"{prefix}_ma_{name}_{level}"] = m["ma"]
            cols[f"{prefix}_n_{name}_{level}"] = m["n_samples"]
    return cols


def write_predictions(path: Path, data: PARData, result: SplitResult) -> None:
    """Per-image probabilities and labels of one split (for intervals and later analyses)."""
    names = np.asarray([data.image_paths[i].name for i in result.rows])
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, image=names, rows=result.rows.astype(np.int64), probs=result.probs.astype(np.float32),
                        labels=result.labels.astype(np.int8), attr_names=np.asarray(data.attr_names))
    tmp.replace(path)


def _eval_data(cfg: CN, contract: InferenceContract, path: Path) -> tuple[CN, PARData]:
    """The dataset to evaluate on, at the checkpoint's input size, with its attribute list."""
    cfg = cfg.clone()
    cfg.defrost()
    cfg.DATASET.HEIGHT, cfg.DATASET.WIDTH = contract.height, contract.width
    cfg.freeze()
    data = build_data(cfg)
    if list(contract.attr_names) != data.attr_names:
        raise CheckpointError(f"{path} was trained on other attributes than DATASET.ATTRS; use the same attribute list")
    split = cfg.TEST.SPLIT
    if split == "all":
        data.splits["all"] = np.arange(len(data.image_paths))
    if split not in data.splits:
        raise CheckpointError(f"TEST.SPLIT = {split!r} not in {sorted(data.splits)}")
    return cfg, data


def check_fingerprint(contract: InferenceContract, data: PARData, split: str) -> bool:
    """Warn when ``split`` is not the split of that name the model was trained / selected with."""
    saved = contract.splits.get(split)
    if saved is None:
        return True
    now = split_fingerprint(data, split)
    if now != saved:
        log.warning("TEST.SPLIT %s differs from the %s split this model was trained with (%d images, sha1 %s; "
                    "now %d, %s): the metrics are not those training reported (another split seed, fraction or "
                    "label sheet?)", split, split, saved["n"], saved["sha1"][:10], now["n"], now["sha1"][:10])
        return False
    return True


def evaluate_retrieval(cfg: CN, loaded, rt: Runtime, exp: Path) -> dict:
    """A reid / multitask checkpoint: rank-k / mAP / mINP of the val and test pairs, written to eval_reid.json
    (REID.METRIC / RERANK of ``cfg``: re-ranking can be switched on here)."""
    c = loaded.contract
    rcfg, data = reid_eval_data(cfg, c.task, (c.height, c.width))
    out = {"checkpoint": str(loaded.path), "flip": c.flip, "rerank": bool(cfg.REID.RERANK),
           **pair_metrics(rcfg, data, loaded.net, rt, exp if rt.is_main else None)}
    if rt.is_main:
        write_json(exp / "eval_reid.json", out)
    for tag in ("val", "test"):
        if tag in out:
            log.info("%s on the %s pair: rank-1 %.4f, mAP %.4f, mINP %.4f%s", loaded.path, tag, out[tag]["rank1"],
                     out[tag]["mAP"], out[tag]["mINP"], (" (re-ranked)" if rcfg.REID.RERANK else "")
                     + (" (flip-averaged)" if c.flip else ""))
    return out


def evaluate(cfg: CN) -> dict:
    """--mode eval: load a checkpoint under its contract and write metrics for TEST.SPLIT (on TEST.DATASET:
    ``tools.evaluation.cross_domain``)."""
    if cfg.TEST.DATASET:
        return evaluate_cross_domain(cfg)
    rt = setup_runtime(cfg)
    exp = experiment_dir(cfg)
    setup_logging(exp, cfg.REDIRECTOR, rt.is_main)
    path = resolve_checkpoint(cfg)
    loaded = load_for_inference(path, rt.device, trusted=cfg.RELOAD.TRUSTED).with_flip(cfg.TEST.FLIP)
    if loaded.contract.task != "par":  # reid / multitask: the retrieval metrics first (eval_reid.json)
        reid = evaluate_retrieval(cfg, loaded, rt, exp)
        if loaded.contract.task == "reid":
            return reid
    cfg, data = _eval_data(cfg, loaded.contract, path)
    split = cfg.TEST.SPLIT
    same = check_fingerprint(loaded.contract, data, split)
    loaders, _ = build_loaders(cfg, data, [split], rt.device, rank=rt.rank, world=rt.world)
    criterion = build_loss(cfg, data.attr_names, data.groups, data.label_priors(cfg.DATASET.TRAIN_SPLIT),
                           loaded.net).to(rt.device)
    scorer = ContractScorer(loaded.contract, rt.device)
    res = evaluate_split(attribute_view(loaded.net), loaders[split], criterion, scorer=scorer, rt=rt,
                         desc=f"eval {split}")
    out = {"checkpoint": str(path), "split": split, "same_split_as_training": same, "flip": loaded.contract.flip,
           "loss": res.loss,
           **scalar_metrics(res.metrics), "strata": stratified_metrics(scorer, data, res)}
    if rt.is_main:
        write_json(exp / f"eval_{split}.json", out)
        write_attribute_report(exp / f"eval_{split}_attributes.csv", scorer.attr_names, {split: res.metrics},
                               cfg.VIS.PLOTS)
        write_predictions(exp / f"eval_{split}_predictions.npz", data, res)
    m = res.metrics
    log.info("%s on %s: mA %.4f (Rethinking convention %.4f, %d attributes), mean acc %.4f, instance F1 %.4f "
             "(written to %s)", path, split, m["ma"], m["ma_rethinking"], m["n_attrs_evaluated"], m["mean_acc"],
             m["instance_f1"], exp)
    return out
