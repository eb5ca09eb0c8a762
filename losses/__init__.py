"""The composable loss stack: BCE, focal, categorical, GradNorm terms + logit update / adjustment.

``build_loss(cfg, attr_names, groups, priors, model)`` -> :class:`LossStack`; see losses/README.md.
"""
from losses.build import build_from_spec, build_loss
from losses.gradnorm import GradNormError
from configs.loss_spec import ALIASES, TERM_PARAMS, LossSpec, TermSpec, check_loss_config, resolve_loss_spec
from losses.stack import LossStack

__all__ = ["ALIASES", "TERM_PARAMS", "GradNormError", "LossSpec", "LossStack", "TermSpec", "build_from_spec",
           "build_loss", "check_loss_config", "resolve_loss_spec"]
