"""Read a YAML experiment file into the schema: ``_BASE_`` inheritance, typo hints, type checks."""
from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Iterable

import yaml
from yacs.config import CfgNode as CN

from configs.default import get_cfg_defaults
from configs.errors import ConfigError
from configs.validate import validate_config

BASE_KEY = "_BASE_"
_YAML11_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")


def _flat_keys(node: CN, prefix: str = "") -> list[str]:
    keys = []
    for k, v in node.items():
        full = f"{prefix}{k}"
        keys.append(full)
        if isinstance(v, CN):
            keys.extend(_flat_keys(v, full + "."))
    return keys


def _suggest(key: str, schema: CN) -> str:
    candidates = _flat_keys(schema)
    close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.5)
    if not close:  # try the last component alone (a key put in the wrong section)
        leaf = key.split(".")[-1]
        close = [c for c in candidates if c.split(".")[-1] == leaf][:1]
    return f"; did you mean '{close[0]}'?" if close else ""


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path} (pass an existing YAML to --config-file)")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)  # safe loading only: a YAML file can never run code
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of KEY: value at the top level")
    return data


def _deep_merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for k, v in top.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_yaml_with_base(path: str | Path, _seen: tuple = ()) -> dict:
    """Load a YAML file, recursively merged on top of its ``_BASE_`` (relative to the file)."""
    path = Path(path).resolve()
    if path in _seen:
        raise ConfigError(f"_BASE_ cycle: {' -> '.join(str(p) for p in (*_seen, path))}")
    data = _read_yaml(path)
    base = data.pop(BASE_KEY, None)
    if base is None:
        return data
    return _deep_merge(load_yaml_with_base(path.parent / base, (*_seen, path)), data)


def _coerce(key: str, value: Any, default: Any, origin: str) -> Any:
    """Check a value against the default's type; ints may fill float keys."""
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _YAML11_FLOAT.match(value):  # YAML 1.1 reads 1e-5 as a string
            return float(value)
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(default, str):
        if isinstance(value, str):
            return value
    elif isinstance(default, (list, tuple)):
        if isinstance(value, (list, tuple)):
            return list(value)
    want = type(default).__name__
    raise ConfigError(
        f"{key} must be {want}, got {type(value).__name__} {value!r} ({origin}); "
        f"e.g. {key}: {default!r}"
    )


def _merge_dict(cfg: CN, data: dict, origin: str, prefix: str = "") -> None:
    for k, v in data.items():
        full = f"{prefix}{k}"
        if k not in cfg:
            raise ConfigError(f"unknown config key '{full}' ({origin}){_suggest(full, get_cfg_defaults())}")
        if isinstance(cfg[k], CN):
            if not isinstance(v, dict):
                raise ConfigError(f"{full} is a section; give it KEY: value entries ({origin})")
            _merge_dict(cfg[k], v, origin, full + ".")
        else:
            cfg[k] = _coerce(full, v, cfg[k], origin)


def _parse_cli_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def merge_opts(cfg: CN, opts: Iterable[str]) -> None:
    """Apply trailing ``KEY VALUE`` pairs from the command line."""
    opts = list(opts)
    if len(opts) % 2:
        raise ConfigError(f"overrides come in KEY VALUE pairs; '{opts[-1]}' has no value")
    for key, raw in zip(opts[0::2], opts[1::2]):
        node, parts = cfg, key.split(".")
        for p in parts[:-1]:
            if p not in node or not isinstance(node[p], CN):
                raise ConfigError(f"unknown config key '{key}' (command line){_suggest(key, get_cfg_defaults())}")
            node = node[p]
        if parts[-1] not in node or isinstance(node[parts[-1]], CN):
            raise ConfigError(f"unknown config key '{key}' (command line){_suggest(key, get_cfg_defaults())}")
        value = _parse_cli_value(raw)
        default = node[parts[-1]]
        if isinstance(default, str) and not isinstance(value, str):
            value = raw  # "NAME 2024" stays a string
        node[parts[-1]] = _coerce(key, value, default, "command line")


def load_config(path: str | Path | None = None, opts: Iterable[str] = (), validate: bool = True,
                base: str | Path | None = None) -> CN:
    """Defaults <- YAML (with _BASE_) <- command-line overrides, then checked and frozen.

    ``base`` replaces the file's own ``_BASE_``: only the keys written in ``path`` are put on top
    of ``base`` (how an experiment file runs on another preset, e.g. the CPU lite one)."""
    cfg = get_cfg_defaults()
    if path is not None:
        if base is not None:
            own = _read_yaml(Path(path))
            own.pop(BASE_KEY, None)
            data = _deep_merge(load_yaml_with_base(base), own)
        else:
            data = load_yaml_with_base(path)
        _merge_dict(cfg, data, str(path))
    merge_opts(cfg, opts)
    apply_aliases(cfg)
    if validate:
        validate_config(cfg)
    cfg.freeze()
    return cfg


def apply_aliases(cfg: CN) -> None:
    """Seed-config keys that mean the same as newer ones."""
    if cfg.RELOAD.FREEZE:
        cfg.FINETUNE.MODE = "head"
    elif cfg.RELOAD.PARTIAL_FINE_TUNING:
        cfg.FINETUNE.MODE = "partial"
