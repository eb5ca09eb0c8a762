"""NATIVE (Sharif_PAR): the xlsx label sheet as shipped, and a seeded, tube-grouped split.

Box file names are ``c<cam>_v<video>_<tube>_<frame>``; boxes of one tube are near-duplicates,
so the split assigns whole tubes, never single boxes, to train / val / test.
"""
from __future__ import annotations

import logging
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
from yacs.config import CfgNode as CN

from dataset.base import DataError, PARData, groups_from_cfg
from dataset.paths import resolve_inside
from dataset.registry import register_dataset

log = logging.getLogger(__name__)

ID_COLUMN = "ID"
QUALITY_COLUMN = "Quality"
_TUBE = re.compile(r"^(c\d+_v\d+_\d+)_\d+$")


def read_label_sheet(path: str | Path) -> tuple[list[str], list[str], np.ndarray, list[str]]:
    """Read the NATIVE xlsx: (ids, attribute columns, labels (N, A) uint8, qualities).

    Blank cells are 0. Cells holding only whitespace are 0 too (the release has a few) and are
    counted in the log. Anything else than blank / 0 / 1 is an error naming the row and column.
    """
    import openpyxl

    path = Path(path)
    if not path.is_file():
        raise DataError(f"label sheet not found: {path} (set DATASET.NATIVE_EXCEL, or link data/NATIVE, see README)")
    try:
        wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as e:  # openpyxl raises several unrelated types for a damaged file
        raise DataError(f"{path} is not a readable .xlsx file ({type(e).__name__}: {e})") from None
    try:
        rows = wb.active.iter_rows(values_only=True)
        header = next(rows, None)
        if header is None:
            raise DataError(f"{path}: the sheet is empty")
        header = [str(h).strip() if h is not None else "" for h in header]
        if ID_COLUMN not in header:
            raise DataError(f"{path}: no '{ID_COLUMN}' column in the header row (found {header[:5]}...)")
        id_col = header.index(ID_COLUMN)
        q_col = header.index(QUALITY_COLUMN) if QUALITY_COLUMN in header else None
        attr_cols = [j for j, h in enumerate(header) if j not in (id_col, q_col) and h]
        attrs = [header[j] for j in attr_cols]
        ids, labels, quality, seen = [], [], [], {}
        stray = 0
        for r, row in enumerate(rows, start=2):  # spreadsheet row numbers (header is row 1)
            row = list(row) + [None] * (len(header) - len(row))
            if all(v is None or (isinstance(v, str) and not v.strip()) for v in row):
                continue  # trailing empty rows
            rid = row[id_col]
            if rid is None or not str(rid).strip():
                raise DataError(f"{path}: row {r} has an empty '{ID_COLUMN}'")
            rid = str(rid).strip()
            if rid in seen:
                raise DataError(f"{path}: duplicate ID '{rid}' in rows {seen[rid]} and {r}")
            seen[rid] = r
            values = []
            for j, name in zip(attr_cols, attrs):
                v = row[j]
                if v is None:
                    values.append(0)
                elif isinstance(v, str) and not v.strip():
                    stray += 1
                    values.append(0)
                elif v in (0, 1) and not isinstance(v, bool) or (isinstance(v, str) and v.strip() in ("0", "1")):
                    values.append(int(float(v)))
                else:
                    raise DataError(f"{path}: row {r}, column '{name}' holds {v!r}; labels must be blank, 0 or 1")
            ids.append(rid)
            labels.append(values)
            quality.append(str(row[q_col]).strip().lower() if q_col is not None and row[q_col] is not None else "")
    finally:
        wb.close()
    if stray:
        log.warning("%s: %d label cell(s) held only whitespace; read as 0", path.name, stray)
    return ids, attrs, np.asarray(labels, dtype=np.uint8).reshape(len(ids), len(attrs)), quality


def tube_of(image_id: str) -> str:
    """``c1_v4_4_142`` -> ``c1_v4_4``; an ID outside the pattern is its own tube."""
    m = _TUBE.match(image_id)
    return m.group(1) if m else image_id


def tube_split(ids: list[str], labels: np.ndarray, fractions: dict[str, float], seed: int) -> dict[str, np.ndarray]:
    """Assign whole tubes to splits, stratified on rare attributes (iterative stratification).

    Tubes are visited rarest-attribute first; each goes to the split whose wanted count of that
    attribute is furthest from being met, so any attribute with >= 2 positive tubes lands in
    train first (train has the largest share). Deterministic for a given seed.
    """
    rng = np.random.default_rng(seed)
    tubes: dict[str, list[int]] = defaultdict(list)
    for i, image_id in enumerate(ids):
        tubes[tube_of(image_id)].append(i)
    names = list(tubes)
    tube_pos = np.stack([labels[tubes[t]].max(0) for t in names]).astype(bool)  # (T, A)
    tube_size = np.array([len(tubes[t]) for t in names])
    per_attr = tube_pos.sum(0)

    split_names = list(fractions)
    frac = np.array([fractions[s] for s in split_names], dtype=np.float64)
    want = frac[:, None] * per_attr[None, :].astype(np.float64)  # wanted positive tubes per split/attr
    capacity = frac * len(ids)  # wanted images per split

    rarity = np.where(tube_pos, per_attr[None, :], np.iinfo(np.int64).max).min(1)
    order = np.lexsort((rng.random(len(names)), rarity))  # rarest first, random tie-break
    assign = np.empty(len(names), dtype=np.int64)
    for t in order:
        pos = np.flatnonzero(tube_pos[t])
        if pos.size:
            a = pos[np.argmin(per_attr[pos])]
            score = want[:, a] + 1e-6 * capacity  # ties go to the split with more room
        else:
            score = capacity.copy()
        score[frac <= 0] = -np.inf
        s = int(np.argmax(score))
        assign[t] = s
        want[s] -= tube_pos[t]
        capacity[s] -= tube_size[t]
    out = {}
    for s, name in enumerate(split_names):
        out[name] = np.sort(np.concatenate([np.asarray(tubes[names[t]]) for t in np.flatnonzero(assign == s)]
                                           or [np.empty(0, np.int64)])).astype(np.int64)
    return out


@register_dataset("NATIVE")
def read_native(cfg: CN) -> PARData:
    d = cfg.DATASET
    root = Path(d.IMAGE_PATH)  # checked before the (slow) sheet is read
    if not root.is_dir():
        raise DataError(f"image folder not found: {root} (set DATASET.IMAGE_PATH, or link data/NATIVE, see README)")
    ids, attrs, labels, quality = read_label_sheet(d.NATIVE_EXCEL)
    missing = [a for a in d.ATTRS if a not in attrs]
    if missing:
        raise DataError(f"{d.NATIVE_EXCEL}: DATASET.ATTRS names column(s) {missing} that the sheet's header row "
                        f"lacks (it has {', '.join(attrs)}); fix the sheet or DATASET.ATTRS")
    if d.REMOVE_LOW_QUALITY:
        keep = [i for i, q in enumerate(quality) if q != "low"]
        log.info("REMOVE_LOW_QUALITY: dropping %d low-quality rows", len(ids) - len(keep))
        ids, labels, quality = [ids[i] for i in keep], labels[keep], [quality[i] for i in keep]
    paths = [resolve_inside(root, f"{i}.jpg", what=f"image ID '{i}'") for i in ids]
    fractions = {"train": d.TRAIN_NATIVE_SPLIT, "val": d.VAL_NATIVE_SPLIT, "test": d.TEST_NATIVE_SPLIT}
    leftover = 1.0 - sum(fractions.values())
    if leftover > 1e-6:
        fractions["unused"] = leftover
    splits = tube_split(ids, labels, fractions, d.SPLIT_SEED)
    splits.pop("unused", None)
    splits["trainval"] = np.sort(np.concatenate([splits["train"], splits["val"]]))
    strata = {"quality": [q or "unknown" for q in quality]} if any(quality) else {}
    data = PARData("NATIVE", paths, labels.astype(np.float32), attrs, splits, groups_from_cfg(d.GROUPS), root,
                   strata=strata)
    return data.select_attrs(list(d.ATTRS)) if d.ATTRS else data
