"""RAPv1 and RAPv2: ``RAP_annotation/RAP_annotation.mat`` + ``RAP_dataset/<image name>``.

Both files hold one struct ``RAP_annotation``:
  RAPv1 (41,585 images, 92 attributes): ``imagesname``, ``label`` (N x 92), ``attribute_eng``,
        ``partion`` (5 partitions of ``train_index`` / ``test_index``, 1-based). The evaluated
        attributes are the first 51 (the published protocol, = ``attribute_exp``).
  RAPv2 (84,928 images, 152 attributes): ``name``, ``data`` (N x 152), ``attribute``,
        ``selected_attribute`` (the 54 evaluated, 1-based), ``partition_attribute`` (5 partitions of
        ``train_index`` / ``val_index`` / ``test_index``, 1-based).

Label value 2 means "uncertain" (e.g. gender); ``DATASET.UNCERTAIN_LABEL`` decides what it becomes
(see ``_common.uncertain_value``). RAPv1 publishes only trainval / test: ``train`` / ``val`` are a
seeded 90 / 10 split of trainval (``DATASET.SPLIT_SEED``); train on ``trainval`` and validate on
``test`` to follow the published protocol exactly.
"""
from __future__ import annotations

import numpy as np
from yacs.config import CfgNode as CN

from dataset.base import DataError, PARData
from dataset.public._common import (as_list, build_pardata, carve_val, dataset_root, get_field, index_vector,
                                    label_matrix, load_mat, pick_by_prefix, require_dir, require_file,
                                    split_choice, str_list, uncertain_value)
from dataset.registry import register_dataset

MAT_FILE = "RAP_annotation/RAP_annotation.mat"
IMAGE_DIR = "RAP_dataset"
RAPV1_EVAL = 51  # the published RAPv1 protocol evaluates the first 51 attributes


def _open(cfg: CN, version: str):
    root = dataset_root(cfg)
    file = require_file(root / MAT_FILE, f"{version} annotation file")
    image_dir = require_dir(root / IMAGE_DIR, f"{version} image folder")
    mat = load_mat(file)
    if "RAP_annotation" not in mat:
        have = ", ".join(k for k in mat if not k.startswith("__"))
        raise DataError(f"{file}: variable 'RAP_annotation' is missing (has {have})")
    return file, image_dir, mat["RAP_annotation"]


def _labels(ann, names: list[str], attrs: list[str], field: list[str], file, cfg: CN) -> np.ndarray:
    labels = label_matrix(get_field(ann, field, file, "RAP_annotation"), file, f"RAP_annotation.{field[0]}",
                          rows=len(names), cols=len(attrs), allowed=(0, 1, 2))
    labels[labels == 2] = uncertain_value(cfg)
    return labels


def _partition(ann, field: list[str], names: tuple[str, ...], cfg: CN, file, n: int) -> dict[str, np.ndarray]:
    parts = as_list(get_field(ann, field, file, "RAP_annotation"))
    part = split_choice(parts, cfg, file, f"RAP_annotation.{field[0]}")
    where = f"RAP_annotation.{field[0]}{{{cfg.DATASET.SPLIT_ID + 1}}}"
    return {s: index_vector(pick_by_prefix(part, s, pos, file, where), file, f"{where}.{s}_index", n)
            for pos, s in enumerate(names)}


@register_dataset("RAPV1")
def read_rapv1(cfg: CN) -> PARData:
    file, image_dir, ann = _open(cfg, "RAPv1")
    names = str_list(get_field(ann, ["imagesname"], file, "RAP_annotation"), file, "RAP_annotation.imagesname")
    attrs = str_list(get_field(ann, ["attribute_eng"], file, "RAP_annotation"), file, "RAP_annotation.attribute_eng")
    if len(attrs) < RAPV1_EVAL:
        raise DataError(f"{file}: RAP_annotation.attribute_eng holds {len(attrs)} names; RAPv1 has at least "
                        f"{RAPV1_EVAL} (92 in the release)")
    labels = _labels(ann, names, attrs, ["label", "data"], file, cfg)
    splits = _partition(ann, ["partion", "partition"], ("train", "test"), cfg, file, len(names))
    splits["trainval"] = splits.pop("train")
    splits["train"], splits["val"] = carve_val(splits["trainval"], int(cfg.DATASET.SPLIT_SEED))
    return build_pardata(cfg, "RAPv1", file, image_dir, names, labels, attrs, list(range(RAPV1_EVAL)), splits,
                         field="RAP_annotation.imagesname")


@register_dataset("RAPV2")
def read_rapv2(cfg: CN) -> PARData:
    file, image_dir, ann = _open(cfg, "RAPv2")
    names = str_list(get_field(ann, ["name"], file, "RAP_annotation"), file, "RAP_annotation.name")
    attrs = str_list(get_field(ann, ["attribute"], file, "RAP_annotation"), file, "RAP_annotation.attribute")
    labels = _labels(ann, names, attrs, ["data"], file, cfg)
    eval_idx = index_vector(get_field(ann, ["selected_attribute"], file, "RAP_annotation"), file,
                            "RAP_annotation.selected_attribute", len(attrs)).tolist()
    splits = _partition(ann, ["partition_attribute"], ("train", "val", "test"), cfg, file, len(names))
    splits["trainval"] = np.concatenate([splits["train"], splits["val"]])
    return build_pardata(cfg, "RAPv2", file, image_dir, names, labels, attrs, eval_idx, splits,
                         field="RAP_annotation.name")
