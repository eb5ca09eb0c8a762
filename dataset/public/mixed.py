"""Mixed training: several PARData on one shared attribute list (UPAR-style harmonisation).

An attribute a source does not annotate is UNKNOWN (-1) for its rows, so losses and metrics skip
it. Splits of the same name are concatenated (row indices offset per source), and each source's
own splits stay reachable as ``<source name>/<split>`` (e.g. ``PETA/test``) for per-source scoring.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from dataset.base import UNKNOWN, AttrGroup, DataError, PARData

NEGATE = "!"  # mapping target prefix: the shared attribute is the source's complement (personalMale -> !Female)


def _columns(data: PARData, attr_names: list[str], rename: dict[str, str]) -> np.ndarray:
    """(N, len(attr_names)) labels of ``data`` on the shared list; UNKNOWN where it has no such attribute."""
    out = np.full((len(data.image_paths), len(attr_names)), UNKNOWN, np.float32)
    filled: dict[str, str] = {}
    for j, src in enumerate(data.attr_names):
        target = rename.get(src, src)
        negate = target.startswith(NEGATE)
        target = target[len(NEGATE):] if negate else target
        if target not in attr_names:
            continue
        if target in filled:
            raise DataError(f"{data.name}: attributes '{filled[target]}' and '{src}' both map to '{target}'; "
                            "map one of them elsewhere")
        filled[target] = src
        col = data.labels[:, j]
        if negate:
            col = np.where(col == UNKNOWN, UNKNOWN, 1.0 - col)
        out[:, attr_names.index(target)] = col
    if not filled:
        raise DataError(f"{data.name} shares no attribute with the target list ({', '.join(attr_names[:5])}, ...); "
                        "give a mapping from its names to the shared ones")
    return out


def _common_root(roots: list[Path | None]) -> Path | None:
    """The deepest folder holding every source's image folder (the loader's path guard)."""
    if not roots or any(r is None for r in roots):
        return None
    for form in (str, os.path.abspath):  # relative roots stay relative, like the image paths
        try:
            return Path(os.path.commonpath([form(r) for r in roots]))
        except ValueError:  # mixed relative / absolute, or different drives
            continue
    return None


def merge_datasets(datasets: list[PARData], attr_names: list[str],
                   mapping: dict[str, dict[str, str]] | None = None,
                   groups: list[AttrGroup] | None = None) -> PARData:
    """One PARData holding every row of ``datasets`` labelled on ``attr_names``.

    ``mapping[source name][source attribute] = shared attribute`` renames a source's attributes
    (prefix the target with '!' for a complement); unmapped names match by equality. ``groups``
    default to the first dataset's groups that lie inside ``attr_names``.
    """
    if not datasets:
        raise DataError("merge_datasets needs at least one dataset")
    if len(set(attr_names)) != len(attr_names):
        dup = sorted({a for a in attr_names if attr_names.count(a) > 1})
        raise DataError(f"merge_datasets: the shared attribute list repeats {dup}")
    mapping = mapping or {}
    paths, blocks, splits = [], [], {}
    offset = 0
    for k, d in enumerate(datasets):
        blocks.append(_columns(d, list(attr_names), mapping.get(d.name, {})))
        paths += d.image_paths
        tag = d.name if sum(x.name == d.name for x in datasets[:k]) == 0 else f"{d.name}#{k}"
        for split, idx in d.splits.items():
            shifted = np.asarray(idx, np.int64) + offset
            splits[f"{tag}/{split}"] = shifted
            if "/" not in split:  # a source's own per-source splits are not merged again
                splits[split] = np.concatenate([splits.get(split, np.empty(0, np.int64)), shifted])
        offset += len(d.image_paths)
    if groups is None:
        groups = [g for g in datasets[0].groups if all(a in attr_names for a in g.attrs)]
    name = "+".join(d.name for d in datasets)
    return PARData(name, paths, np.concatenate(blocks), list(attr_names), splits, list(groups),
                   _common_root([d.image_root for d in datasets]))
