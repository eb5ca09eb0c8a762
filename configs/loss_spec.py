"""What a loss configuration means, checked without touching tensors.

``resolve_loss_spec(cfg)`` turns ``LOSS.TYPE`` (seed alias) or ``LOSS.TERMS`` (explicit stack)
plus the stack-wide keys into a plain :class:`LossSpec`; every mistake is a one-line
``ConfigError``. ``configs/validate.py`` calls it at load time, ``losses.build`` uses the result.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from configs.errors import ConfigError


class FromCfg(str):
    """A term parameter whose default is the ``LOSS.<key>`` config value."""


def _number(lo: float | None = None, hi: float | None = None, lo_open: bool = False):
    def check(where: str, v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(f"{where} must be a number, got {type(v).__name__} {v!r}")
        v = float(v)
        if lo is not None and (v < lo or (lo_open and v == lo)):
            raise ConfigError(f"{where} must be {'>' if lo_open else '>='} {lo}, got {v}")
        if hi is not None and v > hi:
            raise ConfigError(f"{where} must be <= {hi}, got {v}")
        return v

    return check


def _choice(*allowed: str):
    def check(where: str, v: Any) -> str:
        if not isinstance(v, str) or v.lower() not in allowed:
            raise ConfigError(f"{where} = {v!r} is not one of {', '.join(repr(a) for a in allowed)}")
        return v.lower()

    return check


def _sample_weight(where: str, v: Any) -> bool:
    """'' / 'weight' like LOSS.SAMPLE_WEIGHT; a YAML bool is accepted too."""
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in ("", "weight"):
        return v.lower() == "weight"
    raise ConfigError(f"{where} = {v!r} must be '' (off) or 'weight' (DeepMAR weighting from train priors)")


_SMOOTH = (FromCfg("LABEL_SMOOTH"), _number(0.0, 0.5))
_WEIGHTING = (FromCfg("SAMPLE_WEIGHT"), _sample_weight)
_BCE_PARAMS = {"LABEL_SMOOTH": _SMOOTH, "SAMPLE_WEIGHT": _WEIGHTING, "SCALE": (1.0, _number(0.0, lo_open=True))}

# term name -> {PARAM: (default, checker)}; WEIGHT is common to all. The one list of valid params.
TERM_PARAMS: dict[str, dict[str, tuple[Any, Callable[[str, Any], Any]]]] = {
    "bce": dict(_BCE_PARAMS),
    "focal": {
        "ALPHA": (FromCfg("FOCAL_ALPHA"), _number(0.0, 1.0)),
        "GAMMA": (FromCfg("FOCAL_GAMMA"), _number(0.0)),
        "SAMPLE_WEIGHT": _WEIGHTING,
    },
    "categorical": {
        "FALLBACK": ("bce", _choice("bce", "mask")),
        "LABEL_SMOOTH": _SMOOTH,
        "SAMPLE_WEIGHT": _WEIGHTING,
    },
    "gradnorm": {
        "ALPHA": (FromCfg("GRADNORM_ALPHA"), _number(0.0)),
        "LR": (FromCfg("GRADNORM_LR"), _number(0.0, lo_open=True)),
        **_BCE_PARAMS,
    },
}
COMMON_PARAMS = {"WEIGHT": (1.0, _number(0.0))}

# Seed LOSS.TYPE names -> (terms, stack options they switch on).
# scaledbceloss: Rethinking_of_PAR's ScaledBCELoss = BCE on logits x 30 (sample weighting, as for
# every loss there, follows LOSS.SAMPLE_WEIGHT). myloss: the seed study's logit-update loss.
ALIASES: dict[str, tuple[list[dict], dict[str, Any]]] = {
    "bceloss": ([{"NAME": "bce"}], {}),
    "scaledbceloss": ([{"NAME": "bce", "SCALE": 30.0}], {}),
    "focalloss": ([{"NAME": "focal"}], {}),
    "gradnormloss": ([{"NAME": "gradnorm"}], {}),
    "myloss": ([{"NAME": "bce"}], {"logit_update": True}),
}


@dataclass
class TermSpec:
    name: str
    weight: float
    params: dict[str, Any]


@dataclass
class LossSpec:
    terms: list[TermSpec]
    sizesum: bool = True
    logit_update: bool = False
    la_mode: str = "none"
    la_tau: float = 1.0
    source: str = "LOSS.TYPE"
    update_floor: float = 0.1
    needs_priors: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        self.needs_priors = self.la_mode != "none" or any(t.params.get("SAMPLE_WEIGHT") for t in self.terms)


def _resolve_term(entry: Any, where: str, loss_cfg) -> TermSpec:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where} must be a mapping like {{NAME: bce, WEIGHT: 1.0}}, got {entry!r}")
    entry = {str(k).upper(): v for k, v in entry.items()}
    name = entry.pop("NAME", None)
    if not isinstance(name, str) or name.lower() not in TERM_PARAMS:
        raise ConfigError(f"{where}: NAME = {name!r} is not a loss term; choose one of {', '.join(TERM_PARAMS)}")
    name = name.lower()
    specs = {**COMMON_PARAMS, **TERM_PARAMS[name]}
    unknown = [k for k in entry if k not in specs]
    if unknown:
        raise ConfigError(f"{where} ({name}): unknown parameter '{unknown[0]}'; valid: {', '.join(sorted(specs))}")
    values = {}
    for key, (default, check) in specs.items():
        if key in entry:
            values[key] = check(f"{where}.{key}", entry[key])
        elif isinstance(default, FromCfg):
            values[key] = check(f"LOSS.{default}", loss_cfg[str(default)])
        else:
            values[key] = default
    weight = values.pop("WEIGHT")
    return TermSpec(name, weight, values)


def resolve_loss_spec(cfg) -> LossSpec:
    """``cfg`` (full config) -> LossSpec; raises ConfigError naming the key and the fix."""
    loss = cfg.LOSS
    options: dict[str, Any] = {}
    if loss.TERMS:
        entries, source = list(loss.TERMS), "LOSS.TERMS"
    else:
        key = str(loss.TYPE).lower()
        if key not in ALIASES:
            raise ConfigError(f"LOSS.TYPE = {loss.TYPE!r} is not one of {', '.join(ALIASES)} "
                              "(or give an explicit stack in LOSS.TERMS)")
        entries, options = ALIASES[key]
        source = f"LOSS.TYPE ({key})"
    terms = [_resolve_term(e, f"{source.split(' ')[0]}[{i}]" if loss.TERMS else source, loss)
             for i, e in enumerate(entries)]
    if not terms:
        raise ConfigError("LOSS.TERMS is empty; list at least one term, e.g. [{NAME: bce}]")
    if sum(t.name == "gradnorm" for t in terms) > 1:
        raise ConfigError("LOSS.TERMS holds more than one gradnorm term; keep one (it owns the task weights)")
    if loss.LA_MODE not in ("none", "train", "posthoc"):
        raise ConfigError(f"LOSS.LA_MODE = {loss.LA_MODE!r} is not one of 'none', 'train', 'posthoc'")
    la_tau = _number(0.0)("LOSS.LA_TAU", loss.LA_TAU)
    floor = float(loss.LOGIT_UPDATE_FLOOR)
    if not 0 < floor <= 1:
        raise ConfigError(f"LOSS.LOGIT_UPDATE_FLOOR must be in (0, 1], got {floor}; e.g. LOSS.LOGIT_UPDATE_FLOOR: 0.1")
    return LossSpec(terms, bool(loss.SIZESUM), bool(loss.LOGIT_UPDATE or options.get("logit_update", False)),
                    loss.LA_MODE, la_tau, source, floor)


def check_loss_config(cfg) -> None:
    """Config-time check (no tensors): called from configs/validate.py."""
    spec = resolve_loss_spec(cfg)
    exclusive = [g for g in cfg.DATASET.GROUPS if len(g) > 1 and g[1] == "exclusive"]
    if any(t.name == "categorical" for t in spec.terms) and cfg.DATASET.GROUPS and not exclusive:
        raise ConfigError("the categorical loss needs at least one 'exclusive' group in DATASET.GROUPS")
