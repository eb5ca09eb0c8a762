"""UPAR (WACV 2024 challenge layout), all paths under ``DATASET.ROOT``:

  phase1/annotations/phase1/train/train.csv     -> split ``train``
  phase2/annotations/val_gt/val_gt.csv          -> split ``val``
  Market1501/... PA100k/... PETA/... (RAP2/...)  -> images, named in the CSVs relative to ROOT

Each CSV row is ``<image path>,<40 labels>`` with labels 1 / 0 / -1 (-1 = not annotated: UNKNOWN,
masked from loss and metrics). The header is ``# image,Age-Young,...,Accessory-Hat``; the release's
train.csv header omits the first column's name, and a file with no header at all takes the 40
standard names (``UPAR_ATTRS``) - all three are read. There is no labelled test split (``test`` is
absent; ``trainval`` = train + val).
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from yacs.config import CfgNode as CN

from dataset.base import UNKNOWN, DataError, PARData
from dataset.public._common import build_pardata, dataset_root, require_file
from dataset.registry import register_dataset

TRAIN_CSV = "phase1/annotations/phase1/train/train.csv"
VAL_CSV = "phase2/annotations/val_gt/val_gt.csv"

_COLOURS = ["Black", "Blue", "Brown", "Green", "Grey", "Orange", "Pink", "Purple", "Red", "White", "Yellow", "Other"]
# The 40 UPAR attributes in the challenge's column order.
UPAR_ATTRS = (["Age-Young", "Age-Adult", "Age-Old", "Gender-Female", "Hair-Length-Short", "Hair-Length-Long",
               "Hair-Length-Bald", "UpperBody-Length-Short"]
              + [f"UpperBody-Color-{c}" for c in _COLOURS]
              + ["LowerBody-Length-Short"]
              + [f"LowerBody-Color-{c}" for c in _COLOURS]
              + ["LowerBody-Type-Trousers&Shorts", "LowerBody-Type-Skirt&Dress", "Accessory-Backpack",
                 "Accessory-Bag", "Accessory-Glasses-Normal", "Accessory-Glasses-Sun", "Accessory-Hat"])


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _is_label_row(row: list[str]) -> bool:
    return len(row) >= 2 and all(_is_number(c) for c in row[1:])


def read_upar_csv(file: Path) -> tuple[list[str], list[str], np.ndarray]:
    """(image paths, attribute names, labels (N, A) float32 with -1 = UNKNOWN) of one UPAR CSV."""
    try:
        with open(file, newline="", encoding="utf-8-sig") as f:
            rows = [(i, row) for i, row in enumerate(csv.reader(f), start=1)
                    if row and (len(row) > 1 or row[0].strip())]  # skip blank lines
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{file} is not a readable CSV file ({type(e).__name__}: {e})") from None
    header = None
    while rows and not _is_label_row(rows[0][1]):  # header / comment lines on top
        line, header = rows.pop(0)
        header = [c.strip() for c in header]
        if any(_is_number(c) for c in header[1:]):  # a label row with a typo, not a header
            col = next(j for j, c in enumerate(header[1:]) if not _is_number(c))
            raise DataError(f"{file}: line {line}, column {col + 2} holds {header[col + 1]!r}; "
                            "labels must be 1, 0 or -1")
    if not rows:
        raise DataError(f"{file}: no label rows")
    width = len(rows[0][1])
    if header is None:
        names = list(UPAR_ATTRS)
    elif len(header) == width:
        names = header[1:]
    elif len(header) == width - 1:  # header without a name for the image column
        names = header
    else:
        raise DataError(f"{file}: the header names {len(header)} columns but the rows have {width} "
                        "(expected: image path + one column per attribute)")
    if len(names) != width - 1:
        raise DataError(f"{file}: rows have {width} columns; without a header they must be "
                        f"image path + the {len(UPAR_ATTRS)} UPAR attributes")
    for line, row in rows:
        if len(row) != width:
            raise DataError(f"{file}: line {line} has {len(row)} columns, expected {width}")
    paths = [row[0].strip() for _, row in rows]
    try:
        labels = np.asarray([row[1:] for _, row in rows], np.float32)  # numpy parses the strings
    except ValueError:
        line, row, col = next((line, row, j) for line, row in rows for j, c in enumerate(row[1:]) if not _is_number(c))
        raise DataError(f"{file}: line {line}, column '{names[col]}' holds {row[col + 1]!r}; "
                        "labels must be 1, 0 or -1") from None
    bad = ~np.isin(labels, np.asarray([1, 0, -1], np.float32))
    if bad.any():
        r, c = map(int, np.argwhere(bad)[0])
        raise DataError(f"{file}: line {rows[r][0]}, column '{names[c]}' holds {labels[r, c]:g}; "
                        "labels must be 1, 0 or -1 (not annotated)")
    labels[labels == -1] = UNKNOWN
    return paths, names, labels


@register_dataset("UPAR")
def read_upar(cfg: CN) -> PARData:
    root = dataset_root(cfg)
    train_file = require_file(root / TRAIN_CSV, "UPAR train annotations")
    val_file = require_file(root / VAL_CSV, "UPAR val annotations (phase 2 val_gt)")
    train_paths, attrs, train_labels = read_upar_csv(train_file)
    val_paths, val_attrs, val_labels = read_upar_csv(val_file)
    if sorted(val_attrs) != sorted(attrs):
        raise DataError(f"{val_file}: attribute columns differ from {train_file.name}: "
                        f"missing {sorted(set(attrs) - set(val_attrs))}, extra {sorted(set(val_attrs) - set(attrs))}")
    val_labels = val_labels[:, [val_attrs.index(a) for a in attrs]]  # same column order as train
    n_train, n_val = len(train_paths), len(val_paths)
    splits = {"train": np.arange(n_train), "val": np.arange(n_train, n_train + n_val),
              "trainval": np.arange(n_train + n_val)}
    labels = np.concatenate([train_labels, val_labels])
    return build_pardata(cfg, "UPAR", train_file, root, train_paths + val_paths, labels, attrs,
                         list(range(len(attrs))), splits, field="the image column")
