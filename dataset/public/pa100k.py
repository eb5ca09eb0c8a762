"""PA100k in its release layout: ``annotation.mat`` + ``data/*.jpg``.

``annotation.mat`` holds ``train/val/test_images_name`` (cells of file names), ``train/val/test_label``
(N x 26, 0/1) and ``attributes`` (26 names). One fixed partition: 80,000 / 10,000 / 10,000.
All 26 attributes are evaluated, so ``eval`` and ``all`` are the same set.
"""
from __future__ import annotations

import numpy as np
from yacs.config import CfgNode as CN

from dataset.base import DataError, PARData
from dataset.public._common import (build_pardata, dataset_root, get_field, label_matrix, load_mat, require_dir,
                                    require_file, str_list)
from dataset.registry import register_dataset

MAT_FILE = "annotation.mat"
IMAGE_DIR = "data"
SPLITS = ("train", "val", "test")


@register_dataset("PA100K")
def read_pa100k(cfg: CN) -> PARData:
    root = dataset_root(cfg)
    file = require_file(root / MAT_FILE, "PA100k annotation file")
    image_dir = require_dir(root / IMAGE_DIR, "PA100k image folder")
    if int(cfg.DATASET.SPLIT_ID) != 0:
        raise DataError(f"DATASET.SPLIT_ID = {cfg.DATASET.SPLIT_ID} but PA100k has one fixed partition; use 0")
    mat = load_mat(file)
    attrs = str_list(get_field(mat, ["attributes"], file, "annotation"), file, "attributes")
    names, labels, splits, start = [], [], {}, 0
    for s in SPLITS:
        part_names = str_list(get_field(mat, [f"{s}_images_name"], file, "annotation"), file, f"{s}_images_name")
        part_labels = label_matrix(get_field(mat, [f"{s}_label"], file, "annotation"), file, f"{s}_label",
                                   rows=len(part_names), cols=len(attrs))
        names += part_names
        labels.append(part_labels)
        splits[s] = np.arange(start, start + len(part_names))
        start += len(part_names)
    splits["trainval"] = np.concatenate([splits["train"], splits["val"]])
    labels = np.concatenate(labels)
    return build_pardata(cfg, "PA100k", file, image_dir, names, labels, attrs, list(range(len(attrs))), splits,
                         field="*_images_name")
