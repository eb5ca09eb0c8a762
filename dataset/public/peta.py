"""PETA in its standard release: ``PETA.mat`` + ``images/00001.png ... 19000.png``.

``peta`` is a struct whose four fields (read by position, as every published loader does):
  1. 19000 x (4 + 105) matrix: 4 bookkeeping columns, then the 105 binary attributes;
  2. the 105 attribute names (cell);
  3. the 35 evaluated attribute indices (1-based);
  4. 5 random partitions (cell of structs train / val / test, 1-based row indices: 9,500 / 1,900 / 7,600).
Row i is image ``{i+1:05d}.png``.
"""
from __future__ import annotations

import numpy as np
from yacs.config import CfgNode as CN

from dataset.base import DataError, PARData
from dataset.public._common import (as_list, build_pardata, dataset_root, index_vector, label_matrix, load_mat,
                                    pick_by_prefix, require_dir, require_file, split_choice, str_list)
from dataset.registry import register_dataset

MAT_FILE = "PETA.mat"
IMAGE_DIR = "images"
N_EXTRA_COLS = 4  # image / identity bookkeeping columns before the attributes


def _fields(peta, file) -> list:
    """The four parts of ``peta``: a struct (usual) or a 1x4 cell."""
    parts = list(peta.values()) if isinstance(peta, dict) else as_list(peta)
    if len(parts) < 4:
        raise DataError(f"{file}: 'peta' should hold 4 parts (labels, attribute names, evaluated indices, "
                        f"partitions), found {len(parts)}")
    return parts[:4]


@register_dataset("PETA")
def read_peta(cfg: CN) -> PARData:
    root = dataset_root(cfg)
    file = require_file(root / MAT_FILE, "PETA annotation file")
    image_dir = require_dir(root / IMAGE_DIR, "PETA image folder")
    mat = load_mat(file)
    if "peta" not in mat:
        have = ", ".join(k for k in mat if not k.startswith("__"))
        raise DataError(f"{file}: variable 'peta' is missing (has {have})")
    raw, names, selected, partitions = _fields(mat["peta"], file)

    names = str_list(names, file, "peta{2} (attribute names)")
    raw = np.asarray(raw)
    if raw.ndim != 2 or raw.shape[1] != N_EXTRA_COLS + len(names):
        raise DataError(f"{file}: peta{{1}} (labels) has shape {raw.shape}, expected (N, {N_EXTRA_COLS + len(names)}) "
                        f"= {N_EXTRA_COLS} bookkeeping columns + {len(names)} attributes")
    labels = label_matrix(raw[:, N_EXTRA_COLS:], file, "peta{1} (labels)")
    n = len(labels)
    eval_idx = index_vector(selected, file, "peta{3} (evaluated attribute indices)", len(names)).tolist()

    parts = split_choice(as_list(partitions), cfg, file, "peta{4} (partitions)")
    where = f"peta{{4}}{{{cfg.DATASET.SPLIT_ID + 1}}}"
    splits = {s: index_vector(pick_by_prefix(parts, s, pos, file, where), file, f"{where}.{s}", n)
              for pos, s in enumerate(("train", "val", "test"))}
    splits["trainval"] = np.concatenate([splits["train"], splits["val"]])

    image_names = [f"{i + 1:05d}.png" for i in range(n)]
    return build_pardata(cfg, "PETA", file, image_dir, image_names, labels, names, eval_idx, splits)
