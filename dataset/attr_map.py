"""Attribute maps between datasets, kept as data in ``dataset/maps/*.yaml``.

A map file holds ``map: {target attribute: [source attribute, ...]}`` and ``unmapped: [target
attribute, ...]``; every target attribute must appear in exactly one of them. The first source
attribute of a list is the one whose head row initialises the target's (see the file's header).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import numpy as np
import yaml

from dataset.attributes import NATIVE_46
from dataset.base import UNKNOWN, DataError, PARData
from dataset.public.peta_raw import PETA_ATTRS

MAPS_DIR = Path(__file__).resolve().parent / "maps"
PETA_TO_NATIVE = MAPS_DIR / "peta_to_native.yaml"


def _read(path: Path) -> tuple[dict, list]:
    if not path.is_file():
        raise DataError(f"attribute map not found: {path}")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise DataError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("map"), dict):
        raise DataError(f"{path}: expected a 'map:' of <target attribute>: [<source attribute>, ...]")
    unmapped = doc.get("unmapped") or []
    if not isinstance(unmapped, list):
        raise DataError(f"{path}: 'unmapped' should be a list of target attributes")
    return doc["map"], [str(a) for a in unmapped]


def read_map_entries(path: str | Path) -> dict[str, list[str]]:
    """{target attribute: [source attributes]} as the file lists them (names not checked against any list)."""
    entries, _ = _read(Path(path))
    return {str(t): [str(s) for s in (v or [])] for t, v in entries.items()}


def load_attr_map(path: str | Path, source_attrs: Sequence[str], target_attrs: Sequence[str]) -> dict[str, list[str]]:
    """{target attribute: [source attributes]} in file order, every name checked against both lists."""
    path = Path(path)
    entries, unmapped = _read(path)
    out: dict[str, list[str]] = {}
    used: dict[str, str] = {}
    for target, sources in entries.items():
        target = str(target)
        if target not in target_attrs:
            raise DataError(f"{path}: '{target}' is not a target attribute; use one of {', '.join(target_attrs)}")
        if not isinstance(sources, list) or not sources:
            raise DataError(f"{path}: '{target}' should map to a non-empty list of source attributes")
        for s in map(str, sources):
            if s not in source_attrs:
                raise DataError(f"{path}: '{target}' lists '{s}', which is not a source attribute; fix the spelling")
            if s in used:
                raise DataError(f"{path}: '{s}' is listed under both '{used[s]}' and '{target}'; keep one")
            used[s] = target
        out[target] = [str(s) for s in sources]
    for t in unmapped:
        if t not in target_attrs or t in out:
            why = "is mapped too" if t in out else "is not a target attribute"
            raise DataError(f"{path}: 'unmapped' names '{t}', which {why}; remove it there")
    missing = [t for t in target_attrs if t not in out and t not in unmapped]
    if missing:
        raise DataError(f"{path}: target attribute(s) {missing} are neither mapped nor listed under 'unmapped'")
    return out


def peta_to_native(path: str | Path = PETA_TO_NATIVE) -> dict[str, list[str]]:
    """The PETA -> NATIVE map: {NATIVE attribute: [PETA attributes]} (NATIVE_46 names, PETA's 105)."""
    return load_attr_map(path, PETA_ATTRS, NATIVE_46)


def head_rows(path: str | Path, source_attrs: Sequence[str], target_attrs: Sequence[str]) -> dict[int, int]:
    """{target index: source index} of the head rows a map initialises: for every target attribute of
    this run that the map names, the row of its first source attribute (the map file's rule).

    Unlike ``load_attr_map`` the run may train a subset of the map's targets, and the checkpoint a
    subset of its sources: a missing first source falls back to the next listed one."""
    entries, _ = _read(Path(path))
    out = {}
    for target, sources in entries.items():
        if str(target) not in target_attrs:
            continue
        present = [s for s in map(str, sources or []) if s in source_attrs]
        if present:
            out[list(target_attrs).index(str(target))] = list(source_attrs).index(present[0])
    return out


def resolve_map_path(name: str) -> Path:
    """A map by name (``peta_to_native`` = dataset/maps/peta_to_native.yaml) or a path to a YAML file."""
    p = MAPS_DIR / f"{name}.yaml"
    return p if p.is_file() else Path(name)


def relabel_by_map(data: PARData, path: str | Path, target_attrs: Sequence[str]) -> PARData:
    """``data`` relabelled onto the map's targets that are in ``target_attrs`` (joint training): a target's
    label is the union of its source attributes (1 where any is 1, 0 where all are 0, else UNKNOWN);
    targets the map leaves out are absent here, so mixed training marks them UNKNOWN for these rows."""
    path = Path(path)
    entries, _ = _read(path)
    names, columns = [], []
    for target, sources in entries.items():
        if str(target) not in target_attrs:
            continue
        missing = [s for s in map(str, sources or []) if s not in data.attr_names]
        if missing:
            raise DataError(f"{path}: '{target}' lists {missing}, which {data.name} does not have; fix the map")
        cols = data.labels[:, [data.attr_names.index(str(s)) for s in sources]]
        union = np.where((cols == 1).any(1), 1.0, np.where((cols == 0).all(1), 0.0, UNKNOWN))
        names.append(str(target))
        columns.append(union.astype(np.float32))
    if not names:
        raise DataError(f"{path} maps none of this run's attributes from {data.name}")
    return dataclasses.replace(data, labels=np.stack(columns, 1), attr_names=names, groups=[], eval_attrs=[])
