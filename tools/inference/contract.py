"""The inference contract a checkpoint carries (as timm's ``pretrained_cfg`` travels with weights).

Everything needed to turn a person image into the probabilities training reported: input size,
resize method, channel order, mean/std, per-attribute thresholds, attribute names and groups, the
group decoding, the post-hoc logit adjustment (priors, tau) and fingerprints of the data splits
the model was selected and reported on. Saved as ``best_model.pth["contract"]`` (a plain dict).
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np
import torch

from dataset.base import AttrGroup, PARData
from dataset.images import CHANNELS, RESIZE
from losses.logit_adjust import posthoc_adjusted
from models.tta import flip_averaged

log = logging.getLogger(__name__)

VERSION = 1


@dataclass
class InferenceContract:
    attr_names: list[str]
    groups: list[list[str]]  # [name, kind, attr, ...]
    height: int
    width: int
    mean: list[float]
    std: list[float]
    thresholds: list[float]  # one per attribute
    group_argmax: bool = False  # exclusive groups decoded as arg-max (METRIC.GROUP_ARGMAX)
    la_tau: float = 0.0  # post-hoc logit adjustment: z - tau * log(pi / (1 - pi)); 0 = none
    priors: list[float] = field(default_factory=list)  # train positive rates (the adjustment, METRIC.DECISION tau_*)
    resize: str = RESIZE
    channels: str = CHANNELS
    input_range: str = "[0, 1]"  # RGB / 255; the model normalises with mean/std itself
    splits: dict[str, dict] = field(default_factory=dict)  # split -> {"n", "sha1"} at training time
    selected_on: str = ""  # the split the best epoch was chosen on
    eval_attrs: list[str] = field(default_factory=list)  # attributes the metrics cover ([] = all)
    channels_last: bool = False  # weights in channels_last during training (inference uses the same kernels)
    task: str = "par"  # TASK: par | reid (the model gives embeddings, no attributes) | multitask (both)
    embed_dim: int = 0  # reid / multitask: length of the retrieval embedding
    flip: bool = False  # TEST.FLIP: logits / embeddings averaged over the crop and its mirror
    version: int = VERSION

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "InferenceContract":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    @property
    def attr_groups(self) -> list[AttrGroup]:
        return [AttrGroup(str(g[0]), str(g[1]), tuple(str(a) for a in g[2:])) for g in self.groups]

    @property
    def posthoc(self) -> bool:
        return self.la_tau != 0.0 and len(self.priors) == len(self.attr_names)

    def threshold_array(self) -> np.ndarray:
        return np.asarray(self.thresholds, dtype=np.float64)

    def exclusive_indices(self) -> list[list[int]]:
        """Index lists of the exclusive groups that ``group_argmax`` decodes (empty when off)."""
        if not self.group_argmax:
            return []
        return [g.indices(self.attr_names) for g in self.attr_groups if g.kind == "exclusive"]


def split_fingerprint(data: PARData, split: str) -> dict:
    """{"n", "sha1"} of a split: its image names (relative to the image root) and labels, in order."""
    rows = data.splits[split]
    h = hashlib.sha1()
    for i in rows:
        p = data.image_paths[i]
        name = p.relative_to(data.image_root).as_posix() if data.image_root and p.is_relative_to(data.image_root) \
            else p.name
        h.update(name.encode() + b"\0")
    h.update(np.ascontiguousarray(data.labels[rows]).tobytes())
    return {"n": int(len(rows)), "sha1": h.hexdigest()}


def contract_for_run(cfg, data: PARData, model: torch.nn.Module, criterion, splits: Sequence[str]) -> InferenceContract:
    """The contract of a model being trained by ``cfg`` on ``data`` (called when best_model.pth is saved)."""
    mean, std = model.normalisation()
    posthoc = criterion.la_mode == "posthoc"
    return InferenceContract(
        attr_names=list(data.attr_names), groups=[[g.name, g.kind, *g.attrs] for g in data.groups],
        height=int(cfg.DATASET.HEIGHT), width=int(cfg.DATASET.WIDTH), mean=list(mean), std=list(std),
        thresholds=[float(cfg.METRIC.THRESHOLD)] * len(data.attr_names), group_argmax=bool(cfg.METRIC.GROUP_ARGMAX),
        la_tau=float(criterion.la_tau) if posthoc else 0.0,
        priors=criterion.priors.detach().cpu().tolist() if posthoc else  # train priors: also for the tau decisions
        [float(x) for x in data.label_priors(cfg.DATASET.TRAIN_SPLIT)] if data.attr_names else [],
        splits={s: split_fingerprint(data, s) for s in splits if s in data.splits},
        selected_on=cfg.DATASET.VAL_SPLIT, eval_attrs=evaluated_attrs(cfg, data),
        channels_last=bool(cfg.MODEL.CHANNELS_LAST), task=str(cfg.get("TASK", "par")),
        embed_dim=int(getattr(model, "embed_dim", 0)), flip=bool(cfg.TEST.FLIP))


def evaluated_attrs(cfg, data: PARData) -> list[str]:
    """METRIC.EVAL_ATTRS: [] (every trained attribute) or the release's published evaluated subset."""
    if cfg.METRIC.EVAL_ATTRS != "published" or not data.attr_names:  # TASK reid trains no attribute
        return []
    if not data.eval_attrs:
        from configs.errors import ConfigError  # a config mistake found once the data is known

        raise ConfigError(f"METRIC.EVAL_ATTRS published: {data.name} defines no evaluated attribute subset "
                          "(only the public releases do, with DATASET.LABEL all); use METRIC.EVAL_ATTRS all")
    return list(data.eval_attrs)


def guessed_contract(cfg, ckpt: dict, path: str) -> InferenceContract:
    """Best guess for a checkpoint written before contracts existed (logged as a warning)."""
    from models.pretrained import preprocessing_of  # only old checkpoints need this guess

    p = preprocessing_of(cfg.MODEL.PRETRAINED)
    mean, std = p.mean, p.std
    names = list(ckpt.get("attr_names") or [])
    log.warning("%s has no inference contract (written by an older version): guessing input %dx%d, mean/std "
                "%s/%s, threshold %g%s; re-save it with this version to be sure", path, cfg.DATASET.HEIGHT,
                cfg.DATASET.WIDTH, mean, std, cfg.METRIC.THRESHOLD,
                ", post-hoc adjustment from the saved loss priors" if cfg.LOSS.LA_MODE == "posthoc" else "")
    priors = ckpt.get("criterion", {}).get("priors") if cfg.LOSS.LA_MODE == "posthoc" else None
    return InferenceContract(
        attr_names=names, groups=[list(g) for g in ckpt.get("groups") or []], height=int(cfg.DATASET.HEIGHT),
        width=int(cfg.DATASET.WIDTH), mean=list(mean), std=list(std),
        thresholds=[float(cfg.METRIC.THRESHOLD)] * len(names), group_argmax=bool(cfg.METRIC.GROUP_ARGMAX),
        la_tau=float(cfg.LOSS.LA_TAU) if priors is not None else 0.0,
        priors=priors.tolist() if priors is not None else [])


class ProbabilityHead(torch.nn.Module):
    """Logits -> probabilities under a contract: post-hoc adjustment (when used), then a sigmoid.

    Training-time evaluation computes its probabilities with the same ``posthoc_adjusted``."""

    def __init__(self, contract: InferenceContract):
        super().__init__()
        self.tau = contract.la_tau if contract.posthoc else 0.0
        priors = contract.priors if contract.posthoc else [0.5] * len(contract.attr_names)
        self.register_buffer("priors", torch.tensor(priors, dtype=torch.float32), persistent=False)

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        z = logits.float()
        if self.tau:
            z = posthoc_adjusted(z, self.priors, self.tau)
        return torch.sigmoid(z)


class ContractModel(torch.nn.Module):
    """(N, 3, H, W) RGB in [0, 1] -> (N, A) probabilities: what every inference path runs.

    A TASK reid model has no attributes: it gives its (N, D) embeddings instead; a multitask model
    gives its attribute probabilities here and its embeddings from ``embed``."""

    def __init__(self, model: torch.nn.Module, contract: InferenceContract):
        super().__init__()
        self.model = flip_averaged(model, contract.flip)
        self.to_probs = ProbabilityHead(contract)
        self.contract = contract

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.contract.task == "reid":
            return self.model.embed(x)
        if self.contract.task == "multitask":
            return self.to_probs(self.model.forward_attrs(x))
        return self.to_probs(self.model(x))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(N, D) retrieval embeddings of a reid / multitask model."""
        if not hasattr(self.model, "embed"):
            raise TypeError("this checkpoint has no embedding head (TASK par); train with TASK reid or multitask")
        return self.model.embed(x)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, D) appearance features of any checkpoint: the retrieval embedding of a reid / multitask model,
        else the backbone's pooled features (what the attribute head reads)."""
        return self.model.embed(x) if hasattr(self.model, "embed") else self.model.forward_features(x)

    def probs_and_embed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``forward`` and ``embed`` of a multitask model from one backbone pass (reid: no attributes)."""
        if self.contract.task == "reid":
            emb = self.model.embed(x)
            return emb.new_zeros((len(x), 0)), emb
        if self.contract.task != "multitask":
            raise TypeError("this checkpoint has no embedding head (TASK par); train with TASK reid or multitask")
        logits, emb = self.model.attrs_and_embed(x)
        return self.to_probs(logits), emb
