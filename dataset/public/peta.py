"""PETA, in either published layout (detected from ``DATASET.ROOT``):

* the original release, ``PETA dataset/<subset>/archive/`` (images + ``Label.txt``; see ``peta_raw``),
  with or without ``PETA.mat`` beside it;
* Rethinking_of_PAR's ``PETA.mat`` + ``images/00001.png ... 19000.png`` (row i is ``{i+1:05d}.png``).

``PETA.mat``'s struct ``peta`` has four fields (read by position, as every published loader does):
  1. 19000 x (4 + 105) matrix: bookkeeping (image index, global identity, subset 1..10, identity in
     the subset), then the 105 binary attributes;
  2. the 105 attribute names (cell);
  3. the 35 evaluated attributes (1-based; the release counts the columns of field 1, so 5..39);
  4. 5 random partitions (cell of structs train / val / test, 1-based row indices: 9,500 / 1,900 / 7,600).

The split is ``DATASET.PETA_SPLIT``, whatever the layout: ``identity`` (seeded, stratified, no identity
in two splits) or ``mat`` (partition ``DATASET.SPLIT_ID`` of ``PETA.mat``, whose partitions share identities);
the raw layout also offers ``reid``, the ReID protocol of ``peta_reid`` (query / gallery splits).
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from yacs.config import CfgNode as CN

from dataset.base import DataError, PARData
from dataset.native import tube_split
from dataset.public._common import (as_list, build_pardata, dataset_root, index_vector, label_matrix, load_mat,
                                    pick_by_prefix, require_dir, require_file, split_choice, str_list)
from dataset.public.peta_raw import (PETA_ATTRS, PETA_EVAL, PETA_SUBSETS, RAW_DIR, align_mat, codes, find_raw_dir,
                                     read_raw_release)
from dataset.public.peta_reid import reid_split
from dataset.registry import register_dataset

log = logging.getLogger(__name__)

MAT_FILE = "PETA.mat"
IMAGE_DIR = "images"
N_EXTRA_COLS = 4  # image / identity bookkeeping columns before the attributes
SPLIT_CHOICES = ("identity", "mat", "reid")


@dataclass
class PetaMat:
    file: Path
    book: np.ndarray  # (N, 4) bookkeeping columns
    labels: np.ndarray  # (N, A) float32 0/1
    names: list[str]
    eval_idx: list[int]  # 0-based attribute indices
    partitions: list


def _fields(peta, file) -> list:
    """The four parts of ``peta``: a struct (usual) or a 1x4 cell."""
    parts = list(peta.values()) if isinstance(peta, dict) else as_list(peta)
    if len(parts) < 4:
        raise DataError(f"{file}: 'peta' should hold 4 parts (labels, attribute names, evaluated indices, "
                        f"partitions), found {len(parts)}")
    return parts[:4]


def _eval_indices(selected, file: Path, n_attrs: int) -> list[int]:
    """0-based evaluated attributes. The release's 5..39 count the columns of peta{1} (bookkeeping
    included) and mean attributes 1..35; indices that all skip the bookkeeping columns are read that way."""
    arr = np.atleast_1d(np.asarray(selected)).ravel()
    if arr.size and arr.dtype.kind in "biuf" and arr.min() > N_EXTRA_COLS:
        return (index_vector(arr, file, "peta{3} (evaluated columns of peta{1})", N_EXTRA_COLS + n_attrs)
                - N_EXTRA_COLS).tolist()
    return index_vector(arr, file, "peta{3} (evaluated attribute indices)", n_attrs).tolist()


def load_peta_mat(file: Path) -> PetaMat:
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
    return PetaMat(file, raw[:, :N_EXTRA_COLS], labels, names, _eval_indices(selected, file, len(names)),
                   as_list(partitions))


def mat_partition(cfg: CN, mat: PetaMat) -> dict[str, np.ndarray]:
    """Partition ``DATASET.SPLIT_ID`` as 0-based row indices (train / val / test)."""
    parts = split_choice(mat.partitions, cfg, mat.file, "peta{4} (partitions)")
    where = f"peta{{4}}{{{cfg.DATASET.SPLIT_ID + 1}}}"
    return {s: index_vector(pick_by_prefix(parts, s, pos, mat.file, where), mat.file, f"{where}.{s}", len(mat.labels))
            for pos, s in enumerate(("train", "val", "test"))}


def split_mode(cfg: CN) -> str:
    choice = str(cfg.DATASET.PETA_SPLIT)
    if choice not in SPLIT_CHOICES:
        raise DataError(f"DATASET.PETA_SPLIT = {choice!r}; use identity (identity-disjoint), mat "
                        "(a PETA.mat partition) or reid (the ReID protocol of dataset/public/peta_reid.py)")
    return choice


def identity_split(keys: list[str], labels: np.ndarray, cfg: CN) -> dict[str, np.ndarray]:
    """Whole identities to train / val / test, stratified on rare attributes: NATIVE's tube split with
    identities as the tubes (keys hold '/', so none looks like a NATIVE tube name)."""
    f = [float(x) for x in cfg.DATASET.PETA_SPLIT_FRACTIONS]
    if len(f) != 3 or min(f) < 0 or f[0] <= 0 or f[1] <= 0 or sum(f) > 1 + 1e-6:
        raise DataError(f"DATASET.PETA_SPLIT_FRACTIONS = {f}; give 3 shares (train, val, test), train and val > 0, "
                        "sum at most 1")
    fractions = dict(zip(("train", "val", "test"), f))
    if 1 - sum(f) > 1e-6:
        fractions["unused"] = 1 - sum(f)
    splits = tube_split(keys, labels, fractions, int(cfg.DATASET.SPLIT_SEED))
    splits.pop("unused", None)
    log.info("PETA identity split (seed %d): %s images, %d identities", cfg.DATASET.SPLIT_SEED,
             {s: len(v) for s, v in splits.items()}, len(set(keys)))
    return splits


def _with_trainval(splits: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    splits["trainval"] = np.sort(np.concatenate([splits["train"], splits["val"]]))
    return splits


def _mat_keys(book: np.ndarray) -> list[str]:
    """(subset, identity in the subset) of every PETA.mat row."""
    return [f"{s:.0f}/{p:.0f}" for s, p in zip(book[:, 2], book[:, 3])]


def _read_mat_layout(cfg: CN, root: Path, choice: str) -> PARData:
    file = require_file(root / MAT_FILE, f"PETA annotation file (or the original release's '{RAW_DIR}' folder)")
    image_dir = require_dir(root / IMAGE_DIR, "PETA image folder")
    if choice == "reid":
        raise DataError(f"DATASET.PETA_SPLIT = reid needs the camera ids of the raw release ('{RAW_DIR}/<subset>/"
                        f"archive/'), which {file} does not hold; point DATASET.ROOT at the raw release")
    mat = load_peta_mat(file)
    keys = _mat_keys(mat.book)
    splits = mat_partition(cfg, mat) if choice == "mat" else identity_split(keys, mat.labels, cfg)
    image_names = [f"{i + 1:05d}.png" for i in range(len(mat.labels))]
    data = build_pardata(cfg, "PETA", file, image_dir, image_names, mat.labels, mat.names, mat.eval_idx,
                         _with_trainval(splits))
    return dataclasses.replace(data, identities=codes(keys))


def _raw_partition(cfg: CN, mat: PetaMat, raw_labels: np.ndarray, row_to_raw: np.ndarray) -> dict[str, np.ndarray]:
    """A PETA.mat partition on the raw release's rows; rows without an image are counted and dropped."""
    present = row_to_raw >= 0
    if (~present).any():
        absent = sorted({PETA_SUBSETS[int(s) - 1] for s in mat.book[~present, 2]})
        log.warning("%s: %d of %d rows (subset %s) have no image in the raw release; dropped from the partitions",
                    mat.file.name, int((~present).sum()), len(present), ", ".join(absent))
    cols = [mat.names.index(a) for a in PETA_ATTRS]
    differ = int((mat.labels[present][:, cols] != raw_labels[row_to_raw[present]]).any(1).sum())
    if differ:
        log.warning("%s: %d rows' labels differ from Label.txt; Label.txt's are used", mat.file.name, differ)
    splits = {}
    for s, rows in mat_partition(cfg, mat).items():
        kept = row_to_raw[rows]
        splits[s] = np.sort(kept[kept >= 0])
        log.info("%s partition %d, %s: %d rows, %d without an image", mat.file.name, cfg.DATASET.SPLIT_ID, s,
                 len(rows), int((kept < 0).sum()))
    return splits


def _mat_beside(root: Path, raw_dir: Path) -> PetaMat:
    """PETA.mat next to the release, its names checked against PETA_ATTRS."""
    for folder in dict.fromkeys((root, raw_dir.parent)):
        if (folder / MAT_FILE).is_file():
            mat = load_peta_mat(folder / MAT_FILE)
            if sorted(mat.names) != sorted(PETA_ATTRS):
                odd = sorted(set(mat.names) ^ set(PETA_ATTRS))[:5]
                raise DataError(f"{mat.file}: its attribute names differ from PETA's 105 ({odd}); "
                                "use the release's PETA.mat or set DATASET.PETA_SPLIT identity")
            return mat
    raise DataError(f"DATASET.PETA_SPLIT = mat but no {MAT_FILE} lies beside {raw_dir}; put it in {root} "
                    "or set DATASET.PETA_SPLIT identity")


def _read_raw_layout(cfg: CN, root: Path, raw_dir: Path, choice: str) -> PARData:
    raw = read_raw_release(raw_dir)
    eval_idx = list(range(len(PETA_EVAL)))
    if choice == "mat":
        mat = _mat_beside(root, raw_dir)
        row_to_raw = align_mat(raw, mat.book[:, 2], mat.book[:, 3], mat.file)
        splits = _raw_partition(cfg, mat, raw.labels, row_to_raw)
        eval_idx = [PETA_ATTRS.index(mat.names[j]) for j in mat.eval_idx]
    elif choice == "reid":
        splits = reid_split(raw, int(cfg.DATASET.SPLIT_SEED))
    else:
        splits = identity_split(raw.identity_keys(), raw.labels, cfg)
    names = [p.relative_to(raw_dir).as_posix() for p in raw.image_paths]
    data = build_pardata(cfg, "PETA", raw_dir, raw_dir, names,
                         raw.labels, list(PETA_ATTRS), eval_idx, splits if choice == "reid" else _with_trainval(splits))
    return dataclasses.replace(data, identities=raw.identity_codes(), cameras=raw.camera_codes())


@register_dataset("PETA")
def read_peta(cfg: CN) -> PARData:
    root = dataset_root(cfg)
    choice = split_mode(cfg)
    raw_dir = find_raw_dir(root)
    if raw_dir is not None:
        return _read_raw_layout(cfg, root, raw_dir, choice)
    return _read_mat_layout(cfg, root, choice)
