"""Cross-domain evaluation: ``--mode eval`` of a checkpoint on another dataset through an attribute map.

    uv run run.py --config-file configs/native_lite0.yaml --mode eval TEST.DATASET PETA \
        TEST.ATTR_MAP peta_to_native TEST.SUBSET TownCentre TEST.SPLIT all

``TEST.DATASET`` names the dataset to score on (a YAML file, or a name: PETA -> configs/peta.yaml); its
``DATASET`` section replaces this config's, at the checkpoint's input size. ``TEST.ATTR_MAP`` (a
``dataset/maps`` name or a YAML path, ``<target>: [<source>, ...]``) relates the two attribute lists;
the direction follows from the names:

* labels mapped (a NATIVE model on PETA with peta_to_native): the map's sources are the dataset's
  attributes; a target's label is their union, scored against the checkpoint's own decision for it;
* decisions mapped (a PETA model on NATIVE with the same map): the sources are the checkpoint's
  attributes; a target is predicted present when any of its sources is (each under the checkpoint's
  shipped rule), and scored against the dataset's label.

Without a map the attributes of the same name are scored. Every prediction is the checkpoint's shipped
decision (its contract: post-hoc adjustment, group decoding, thresholds, ``>``). ``TEST.SUBSET`` keeps the
images whose path has a folder of that name (PETA's subsets: TownCentre, CUHK ...). A model whose
pretraining saw the dataset must be scored only on images it never trained on: with TEST.DATASET naming the
dataset of its RELOAD run, that run's saved config gives the split and TEST.SPLIT must be test (or val); a YAML
path is used as given. Writes ``eval_cross_<dataset>[_<subset>]_<split>.json`` with
the metrics over the scored attributes, the per-attribute figures, and what was left out.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from yacs.config import CfgNode as CN

from configs.errors import ConfigError
from dataset import build_data, build_loaders
from dataset.attr_map import read_map_entries, resolve_map_path
from dataset.base import UNKNOWN, PARData
from models.reid_model import attribute_view
from tools.checkpoint import CheckpointError
from tools.device import setup_runtime
from tools.evaluation.forward import validate
from tools.evaluation.metrics import compute_metrics, decode_exclusive, predicted_positive
from tools.inference.contract import InferenceContract
from tools.inference.loading import experiment_dir, load_for_inference, resolve_checkpoint
from tools.results import experiment_dir as experiment_dir_of
from tools.results import scalar_metrics, setup_logging, write_json

log = logging.getLogger("eval")
REPO = Path(__file__).resolve().parents[2]


@dataclass
class AttrPairing:
    """How the checkpoint's decisions and the dataset's labels meet: one entry per scored attribute."""

    names: list[str]  # scored attribute names
    pred_cols: list[list[int]]  # checkpoint columns whose decisions are OR-ed into each
    label_cols: list[list[int]]  # dataset columns whose labels are united into each
    direction: str  # labels mapped | decisions mapped | same names


def pretraining_config(cfg: CN) -> Path | None:
    """The saved config of the RELOAD run this checkpoint started from when that run trained on TEST.DATASET (a
    name): its DATASET section (the split) is the one to score with, so that TEST.SPLIT test holds only images the
    pretraining never trained on; ``ConfigError`` for a split that would score its training images."""
    spec = str(cfg.TEST.DATASET)
    if not (cfg.RELOAD.TYPE and cfg.RELOAD.MODEL_FOLDER_NAME and str(cfg.RELOAD.DATASET).lower() == spec.lower()):
        return None
    saved = experiment_dir_of(cfg, cfg.RELOAD.MODEL_FOLDER_NAME, cfg.RELOAD.DATASET) / "config.yaml"
    if cfg.TEST.SPLIT not in ("test", "val"):
        raise ConfigError(f"TEST.DATASET {spec}: this checkpoint's pretraining (RELOAD {saved.parent}) trained on "
                          f"{spec}; TEST.SPLIT {cfg.TEST.SPLIT} would score its training images: use TEST.SPLIT test")
    if not saved.is_file():
        raise ConfigError(f"TEST.DATASET {spec}: the pretraining's config {saved} is missing, so its split is unknown; "
                          f"give TEST.DATASET the YAML that pretraining used (e.g. configs/peta_lite.yaml)")
    log.info("TEST.DATASET %s: the checkpoint's pretraining trained on it; scoring with that run's split (%s), "
             "TEST.SPLIT %s = images it never trained on", spec, saved, cfg.TEST.SPLIT)
    return saved


def dataset_config(cfg: CN, contract: InferenceContract) -> CN:
    """This config with TEST.DATASET's DATASET section, at the checkpoint's input size; a map needs the
    dataset's full attribute list (DATASET.LABEL all)."""
    from configs import load_config

    spec = str(cfg.TEST.DATASET)
    path = Path(spec) if spec.endswith((".yaml", ".yml")) else REPO / "configs" / f"{spec.lower()}.yaml"
    pretraining = pretraining_config(cfg)
    if pretraining is not None:
        path = pretraining
    if not path.is_file():
        raise ConfigError(f"TEST.DATASET = {spec!r}: no dataset config {path}; give a YAML file (e.g. configs/peta.yaml)")
    other = load_config(path)
    out = cfg.clone()
    out.defrost()
    node = other.DATASET.clone()
    node.defrost()
    out.DATASET = node
    out.DATASET.HEIGHT, out.DATASET.WIDTH = contract.height, contract.width
    if cfg.TEST.ATTR_MAP:
        out.DATASET.LABEL, out.DATASET.ATTRS = "all", []
    out.freeze()
    return out


def pair_attributes(cfg: CN, contract: InferenceContract, data: PARData) -> AttrPairing:
    """The scored attributes: through TEST.ATTR_MAP (direction from the names), or those of the same name."""
    ck, ds = list(contract.attr_names), list(data.attr_names)
    if not cfg.TEST.ATTR_MAP:
        common = [a for a in ck if a in ds]
        if not common:
            raise ConfigError(f"TEST.DATASET {data.name} shares no attribute name with the checkpoint; set TEST.ATTR_MAP")
        return AttrPairing(common, [[ck.index(a)] for a in common], [[ds.index(a)] for a in common], "same names")
    path = resolve_map_path(cfg.TEST.ATTR_MAP)
    entries = read_map_entries(path)
    sources = {s for v in entries.values() for s in v}
    if sources <= set(ds):
        kept = [t for t in entries if t in ck]
        return AttrPairing(kept, [[ck.index(t)] for t in kept],
                           [[ds.index(s) for s in entries[t]] for t in kept], "labels mapped")
    if sources <= set(ck):
        kept = [t for t in entries if t in ds]
        return AttrPairing(kept, [[ck.index(s) for s in entries[t]] for t in kept],
                           [[ds.index(t)] for t in kept], "decisions mapped")
    raise ConfigError(f"TEST.ATTR_MAP {path.name}: its source attributes are neither all of {data.name}'s nor all of the "
                      "checkpoint's; use a map from one of them to the other")


def united(values: np.ndarray, cols: list[list[int]]) -> np.ndarray:
    """(N, len(cols)) union per entry: 1 where any column is 1, 0 where all are 0, else UNKNOWN."""
    out = [np.where((values[:, c] == 1).any(1), 1.0, np.where((values[:, c] == 0).all(1), 0.0, UNKNOWN))
           for c in cols]
    return np.stack(out, 1) if out else np.zeros((len(values), 0))


def shipped_decisions(probs: np.ndarray, contract: InferenceContract) -> np.ndarray:
    """(N, A) 0/1 decisions under the contract: group decoding, then ``prob > threshold``."""
    idx = contract.exclusive_indices()
    decided = decode_exclusive(probs, idx) if idx else probs
    return predicted_positive(decided, contract.threshold_array()).astype(np.float64)


def subset_rows(data: PARData, rows: np.ndarray, subset: str) -> np.ndarray:
    """The rows whose image path has a folder named ``subset`` (all rows for "")."""
    if not subset:
        return rows
    keep = np.array([subset in data.image_paths[i].parent.parts for i in rows], bool)
    if not keep.any():
        raise ConfigError(f"TEST.SUBSET = {subset!r}: no image of this split lies in a folder of that name")
    return rows[keep]


class _NoLoss(torch.nn.Module):
    """``validate`` wants a loss; the dataset's labels do not fit the checkpoint's head."""

    def forward(self, logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict]:
        return logits.new_zeros(()), {}


def _split_data(dcfg: CN, data: PARData, split: str, subset: str) -> PARData:
    if split == "all":
        data.splits["all"] = np.arange(len(data.image_paths))
    if split not in data.splits:
        raise CheckpointError(f"TEST.SPLIT = {split!r} not in {sorted(data.splits)} of {data.name}")
    data.splits[split] = subset_rows(data, data.splits[split], subset)
    return data


def cross_domain_metrics(decisions: np.ndarray, labels: np.ndarray, pairing: AttrPairing) -> dict:
    """Metrics over the paired attributes (``compute_metrics`` on 0/1 decisions, so threshold 0.5)."""
    pred = united(decisions, pairing.pred_cols)
    gt = united(labels, pairing.label_cols)
    m = compute_metrics(np.where(pred < 0, 0.0, pred), gt, 0.5)
    per = {a: {"ma": float(m["per_attr"]["ma"][j]), "n_pos": int(m["per_attr"]["n_pos"][j]),
               "pos_recall": float(m["per_attr"]["pos_recall"][j]), "neg_recall": float(m["per_attr"]["neg_recall"][j]),
               "predicted_rate": float(pred[:, j].mean())} for j, a in enumerate(pairing.names)}
    return {**scalar_metrics(m), "attributes": per}


def evaluate_cross_domain(cfg: CN) -> dict:
    """--mode eval with TEST.DATASET: the checkpoint's shipped decisions scored on another dataset."""
    rt = setup_runtime(cfg)
    exp = experiment_dir(cfg)
    setup_logging(exp, cfg.REDIRECTOR, rt.is_main)
    path = resolve_checkpoint(cfg)
    loaded = load_for_inference(path, rt.device, trusted=cfg.RELOAD.TRUSTED).with_flip(cfg.TEST.FLIP)
    dcfg = dataset_config(cfg, loaded.contract)
    split, subset = cfg.TEST.SPLIT, str(cfg.TEST.SUBSET)
    data = _split_data(dcfg, build_data(dcfg), split, subset)
    pairing = pair_attributes(cfg, loaded.contract, data)
    loaders, bad = build_loaders(dcfg, data, [split], rt.device)
    probs, labels, rows, _ = validate(attribute_view(loaded.net), loaders[split], _NoLoss(), to_probs=loaded.model.to_probs,
                                      device=rt.device, desc=f"cross {data.name} {split}", progress=rt.is_main)
    out = {"checkpoint": str(path), "dataset": data.name, "subset": subset, "split": split,
           "attr_map": cfg.TEST.ATTR_MAP, "direction": pairing.direction, "n_images": int(len(rows)),
           "bad_images_skipped": len(bad.skipped), "n_attrs_paired": len(pairing.names),
           **cross_domain_metrics(shipped_decisions(probs, loaded.contract), labels, pairing)}
    tag = "_".join(x for x in ("cross", data.name, subset, split) if x)
    if rt.is_main:
        write_json(exp / f"eval_{tag}.json", out)
        np.savez_compressed(exp / f"eval_{tag}_predictions.npz", rows=rows, probs=probs.astype(np.float32),
                            labels=labels.astype(np.int8), attr_names=np.asarray(loaded.contract.attr_names),
                            data_attr_names=np.asarray(data.attr_names))
    log.info("%s on %s%s %s (%d images, %d attributes, %s): mA %.4f, instance F1 %.4f (written to %s)", path,
             data.name, f" {subset}" if subset else "", split, len(rows), len(pairing.names), pairing.direction,
             out["ma"], out["instance_f1"], exp)
    return out
