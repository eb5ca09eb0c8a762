"""cfg -> LossStack (``LOSS.TERMS`` or the seed alias ``LOSS.TYPE``; see losses/README.md)."""
from __future__ import annotations

import logging

import numpy as np
from torch import nn

from configs.errors import ConfigError
from dataset.base import AttrGroup
from losses.bce import BCETerm
from losses.categorical import CategoricalTerm
from losses.focal import FocalTerm
from losses.gradnorm import GradNormTerm
from configs.loss_spec import LossSpec, TermSpec, resolve_loss_spec
from losses.stack import LossStack

log = logging.getLogger(__name__)


def _exclusive_indices(attr_names: list[str], groups: list[AttrGroup]) -> list[list[int]]:
    out = []
    for g in groups:
        if g.kind != "exclusive":
            continue
        missing = [a for a in g.attrs if a not in attr_names]
        if missing:
            raise ConfigError(f"attribute group '{g.name}' names {missing}, which are not trained attributes; "
                              "fix DATASET.GROUPS or DATASET.ATTRS")
        if len(g.attrs) >= 2:
            out.append(g.indices(attr_names))
    return out


def _make_term(t: TermSpec, attr_names: list[str], groups: list[AttrGroup], model: nn.Module | None) -> nn.Module:
    p = t.params
    if t.name == "bce":
        return BCETerm(p["LABEL_SMOOTH"], p["SAMPLE_WEIGHT"], p["SCALE"])
    if t.name == "focal":
        return FocalTerm(p["ALPHA"], p["GAMMA"], p["SAMPLE_WEIGHT"])
    if t.name == "categorical":
        idx = _exclusive_indices(attr_names, groups)
        if not idx:
            raise ConfigError("the categorical loss needs at least one 'exclusive' attribute group "
                              "(DATASET.GROUPS, e.g. [Age, exclusive, young, adult, old]); none is defined")
        return CategoricalTerm(idx, p["FALLBACK"], p["LABEL_SMOOTH"], p["SAMPLE_WEIGHT"])
    if t.name == "gradnorm":
        if model is None or not hasattr(model, "shared_params"):
            raise ConfigError("the gradnorm loss needs the model (its shared_params()); pass model= to build_loss")
        term = GradNormTerm(len(attr_names), model.shared_params, alpha=p["ALPHA"], lr=p["LR"],
                            label_smooth=p["LABEL_SMOOTH"], sample_weight=p["SAMPLE_WEIGHT"], scale=p["SCALE"])
        term.shared_trainable()  # fail now, not at the first step, when the shared layer is frozen
        return term
    raise ConfigError(f"loss term {t.name!r} has no implementation")  # spec and build out of sync


def build_from_spec(spec: LossSpec, attr_names: list[str], groups: list[AttrGroup], priors: np.ndarray | None,
                    model: nn.Module | None = None) -> LossStack:
    if spec.needs_priors and priors is None:
        raise ConfigError("sample weighting and logit adjustment need the train-split priors; "
                          "pass priors=PARData.label_priors('train') to build_loss")
    terms = [(t.name, t.weight, _make_term(t, attr_names, groups, model)) for t in spec.terms]
    return LossStack(terms, len(attr_names), priors, sizesum=spec.sizesum, logit_update=spec.logit_update,
                     la_mode=spec.la_mode, la_tau=spec.la_tau, update_floor=spec.update_floor)


def build_loss(cfg, attr_names: list[str], groups: list[AttrGroup], priors: np.ndarray | None,
               model: nn.Module | None = None) -> LossStack:
    """The training criterion described by ``cfg.LOSS`` for these attributes / groups / train priors."""
    stack = build_from_spec(resolve_loss_spec(cfg), list(attr_names), list(groups), priors, model)
    log.info("loss: %s", stack.extra_repr())
    return stack
