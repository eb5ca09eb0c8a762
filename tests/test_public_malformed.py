"""Malformed public-dataset files: each gives a DataError naming the file and the field at fault
(wrong shape, missing field, split index out of range, bad values, unsafe pickles, escaping paths)."""
from __future__ import annotations

import builtins
import os
import pickle

import numpy as np
import pytest
import scipy.io as sio

from dataset.base import DataError
from dataset.registry import read_dataset
from tests.test_public_datasets import (RAPV1_N, RAPV2_N, UPAR_ATTRS, UPAR_TRAIN, build_pa100k, build_peta, build_pkl,
                                  build_rap, build_upar, cell, cfg_for, csv_text, pa100k_fields, peta_fields,
                                  pkl_dataset, rapv1_fields, rapv2_fields, upar_rows)


def _fails(cfg, *parts: str) -> str:
    with pytest.raises(DataError) as e:
        read_dataset(cfg)
    msg = str(e.value)
    for p in parts:
        assert p in msg, f"{p!r} not in: {msg}"
    return msg


# ----------------------------------------------------------------------------- PETA
def test_peta_wrong_label_shape(tmp_path):
    f = peta_fields()
    f["labelData"] = f["labelData"][:, :-1]  # one attribute column short of the 10 names
    root = build_peta(tmp_path / "PETA", f)
    _fails(cfg_for("peta", root), "PETA.mat", "peta{1} (labels)", "shape (12, 13)", "(N, 14)")


def test_peta_missing_part_and_missing_variable(tmp_path):
    f = peta_fields()
    del f["partion_attribute"]
    root = build_peta(tmp_path / "PETA", f)
    _fails(cfg_for("peta", root), "PETA.mat", "'peta' should hold 4 parts")
    sio.savemat(root / "PETA.mat", {"other": np.zeros(2)})
    _fails(cfg_for("peta", root), "PETA.mat", "variable 'peta' is missing")


def test_peta_split_index_out_of_range(tmp_path):
    f = peta_fields()
    f["partion_attribute"][0, 0]["test"][-1, 0] = 13.0  # 12 images
    root = build_peta(tmp_path / "PETA", f)
    _fails(cfg_for("peta", root), "PETA.mat", "peta{4}{1}.test", "index 13 outside 1..12")


def test_peta_bad_label_value_eval_index_and_split_id(tmp_path):
    f = peta_fields()
    f["labelData"][2, 5] = 3
    root = build_peta(tmp_path / "PETA", f)
    _fails(cfg_for("peta", root), "peta{1} (labels)", "holds 3 at row 3, column 2")
    f = peta_fields()
    f["selected_attribute"][0, 0] = 11  # 10 attributes
    root = build_peta(tmp_path / "PETA2", f)
    _fails(cfg_for("peta", root), "peta{3} (evaluated attribute indices)", "index 11 outside 1..10")
    _fails(cfg_for("peta", build_peta(tmp_path / "PETA3"), "DATASET.SPLIT_ID", "5"),
           "DATASET.SPLIT_ID = 5", "2 partition(s)")


def test_peta_group_typo_and_missing_images(tmp_path):
    root = build_peta(tmp_path / "PETA")
    _fails(cfg_for("peta", root, "DATASET.GROUPS", "[[age, exclusive, personalLess30, personalLes45]]"),
           "DATASET.GROUPS group 'age'", "personalLes45", "PETA.mat")
    (root / "images").rename(root / "imgs")
    _fails(cfg_for("peta", root), "PETA image folder not found", str(root / "images"))


def test_garbage_mat_and_missing_root(tmp_path):
    root = tmp_path / "PETA"
    (root / "images").mkdir(parents=True)
    (root / "PETA.mat").write_bytes(b"not a mat file at all" * 10)
    _fails(cfg_for("peta", root), "PETA.mat", "not a readable MATLAB .mat file")
    _fails(cfg_for("peta", tmp_path / "nowhere"), "DATASET.ROOT", "nowhere")
    _fails(cfg_for("peta", root, "DATASET.LABEL", "color"), "DATASET.LABEL = 'color'")


# ----------------------------------------------------------------------------- PA100k
def test_pa100k_missing_field(tmp_path):
    f = pa100k_fields()
    del f["val_label"]
    _fails(cfg_for("pa100k", build_pa100k(tmp_path / "PA", f)), "annotation.mat", "'annotation.val_label' is missing")


def test_pa100k_wrong_shape_and_name_count(tmp_path):
    f = pa100k_fields()
    f["train_label"] = f["train_label"][:, :25]
    _fails(cfg_for("pa100k", build_pa100k(tmp_path / "PA", f)), "annotation.mat", "train_label has shape (5, 25)",
           "expected (5, 26)")
    f = pa100k_fields()
    f["test_images_name"] = cell(["a.jpg", "b.jpg"])  # 3 label rows
    _fails(cfg_for("pa100k", build_pa100k(tmp_path / "PB", f)), "test_label has shape (3, 26)", "expected (2, 26)")


def test_pa100k_split_id_and_escaping_name(tmp_path):
    root = build_pa100k(tmp_path / "PA")
    _fails(cfg_for("pa100k", root, "DATASET.SPLIT_ID", "1"), "DATASET.SPLIT_ID = 1", "one fixed partition")
    f = pa100k_fields()
    f["val_images_name"] = cell(["../../secret.jpg", "x.jpg"])
    _fails(cfg_for("pa100k", build_pa100k(tmp_path / "PB", f)), "annotation.mat", "../../secret.jpg",
           "leaves the image folder")


# ----------------------------------------------------------------------------- RAP
def test_rapv1_partition_out_of_range(tmp_path):
    f = rapv1_fields()
    f["partion"][0, 0]["test_index"][0, 0] = RAPV1_N + 1
    root = build_rap(tmp_path / "RAP", f, RAPV1_N)
    _fails(cfg_for("rapv1", root), "RAP_annotation.mat", "RAP_annotation.partion{1}.test_index",
           "index 21 outside 1..20")


def test_rapv1_missing_field_and_wrong_shape(tmp_path):
    f = rapv1_fields()
    del f["imagesname"]
    _fails(cfg_for("rapv1", build_rap(tmp_path / "A", f, RAPV1_N)), "'RAP_annotation.imagesname' is missing")
    f = rapv1_fields()
    f["label"] = f["label"][:-1]
    _fails(cfg_for("rapv1", build_rap(tmp_path / "B", f, RAPV1_N)), "RAP_annotation.label has shape (19, 55)",
           "expected (20, 55)")


def test_rapv2_bad_selected_attribute_value_and_split_id(tmp_path):
    f = rapv2_fields()
    f["selected_attribute"][0, -1] = 17  # 16 attributes
    _fails(cfg_for("rapv2", build_rap(tmp_path / "A", f, RAPV2_N)), "RAP_annotation.selected_attribute",
           "index 17 outside 1..16")
    f = rapv2_fields()
    f["data"][4, 2] = 7
    _fails(cfg_for("rapv2", build_rap(tmp_path / "B", f, RAPV2_N)), "RAP_annotation.data", "holds 7 at row 5, column 3",
           "0, 1, 2")
    _fails(cfg_for("rapv2", build_rap(tmp_path / "C", rapv2_fields(), RAPV2_N), "DATASET.SPLIT_ID", "7"),
           "DATASET.SPLIT_ID = 7", "5 partition(s)", "partition_attribute")


def test_rapv2_missing_partition_and_bad_uncertain_choice(tmp_path):
    f = rapv2_fields()
    del f["partition_attribute"]
    root = build_rap(tmp_path / "A", f, RAPV2_N)
    _fails(cfg_for("rapv2", root), "'RAP_annotation.partition_attribute' is missing")
    _fails(cfg_for("rapv2", build_rap(tmp_path / "B", rapv2_fields(), RAPV2_N), "DATASET.UNCERTAIN_LABEL", "zero"),
           "DATASET.UNCERTAIN_LABEL = 'zero'")


# ----------------------------------------------------------------------------- pickle
def test_pkl_missing_field_wrong_shape_and_range(tmp_path, monkeypatch):
    d = pkl_dataset()
    del d["partition"]
    _fails(cfg_for("pkl", build_pkl(tmp_path / "A", d, monkeypatch)), "dataset_all.pkl",
           "field 'partition' is missing")
    d = pkl_dataset()
    d["label"] = d["label"][:, :4]
    _fails(cfg_for("pkl", build_pkl(tmp_path / "B", d, monkeypatch)), "dataset_all.pkl", "label has shape (10, 4)")
    d = pkl_dataset()
    _fails(cfg_for("pkl", build_pkl(tmp_path / "D", d, monkeypatch)), "DATASET.GROUPS group 'age'",
           "dataset_all.pkl does not have")  # configs/pkl.yaml carries PA100k's groups
    d = pkl_dataset()
    d["partition"]["test"][0][0] = 10  # 10 images, 0-based
    _fails(cfg_for("pkl", build_pkl(tmp_path / "C", d, monkeypatch), "DATASET.GROUPS", "[]"), "partition.test",
           "index 10 outside 0..9")


class _Evil:
    """Unpickling this would run code: the reader must refuse it without running anything."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (builtins.exec, (f"open({str(self.target)!r}, 'w').write('pwned')",))


def test_pkl_refuses_code_and_garbage(tmp_path, monkeypatch):
    target = tmp_path / "pwned.txt"
    d = pkl_dataset()
    d["root"] = _Evil(target)
    root = build_pkl(tmp_path / "A", d, monkeypatch)
    _fails(cfg_for("pkl", root), "dataset_all.pkl", "refused global 'builtins.exec'")
    assert not target.exists()
    (root / "dataset_all.pkl").write_bytes(pickle.dumps({"x": os.getcwd}))
    _fails(cfg_for("pkl", root), "refused global 'posix.getcwd'" if os.name == "posix" else "refused global")
    (root / "dataset_all.pkl").write_bytes(b"\x80\x04garbage")
    _fails(cfg_for("pkl", root), "dataset_all.pkl", "not a readable pickle")


def test_pkl_missing_images(tmp_path, monkeypatch):
    root = build_pkl(tmp_path / "A", pkl_dataset(), monkeypatch, images=False)
    _fails(cfg_for("pkl", root, "DATASET.GROUPS", "[]"), "image folder not found", str(root / "RAP_dataset"))


# ----------------------------------------------------------------------------- UPAR
def _train_csv(root):
    return root / "phase1/annotations/phase1/train/train.csv"


def test_upar_bad_value_names_line_and_column(tmp_path):
    root = build_upar(tmp_path / "U")
    rows = upar_rows(UPAR_TRAIN, 6)
    rows[2, 2] = 2
    _train_csv(root).write_text(csv_text(UPAR_TRAIN, rows, ",".join(UPAR_ATTRS)))
    _fails(cfg_for("upar", root), "train.csv", "line 4, column 'Age-Old'", "holds 2")
    text = csv_text(UPAR_TRAIN, upar_rows(UPAR_TRAIN, 6), ",".join(UPAR_ATTRS)).replace(",1,", ",yes,", 1)
    _train_csv(root).write_text(text)
    _fails(cfg_for("upar", root), "train.csv", "line 2", "'yes'")


def test_upar_wrong_column_count_and_header(tmp_path):
    root = build_upar(tmp_path / "U")
    lines = _train_csv(root).read_text().splitlines()
    lines[3] = lines[3].rsplit(",", 1)[0]  # one label short
    _train_csv(root).write_text("\n".join(lines) + "\n")
    _fails(cfg_for("upar", root), "train.csv", "line 4 has 40 columns, expected 41")
    _train_csv(root).write_text(csv_text(UPAR_TRAIN, upar_rows(UPAR_TRAIN, 6), "path," + ",".join(UPAR_ATTRS[:30])))
    _fails(cfg_for("upar", root), "train.csv", "header names 31 columns but the rows have 41")


def test_upar_missing_val_file_attribute_mismatch_and_escape(tmp_path):
    root = build_upar(tmp_path / "U")
    val = root / "phase2/annotations/val_gt/val_gt.csv"
    renamed = ["# image", "Age-Kid", *UPAR_ATTRS[1:]]
    val.write_text(csv_text(["PETA/images/00011.png"], upar_rows(["x"], 1), ",".join(renamed)))
    _fails(cfg_for("upar", root), "val_gt.csv", "missing ['Age-Young']", "extra ['Age-Kid']")
    val.unlink()
    _fails(cfg_for("upar", root), "UPAR val annotations", "val_gt.csv")
    root = build_upar(tmp_path / "V")
    _train_csv(root).write_text(csv_text(["/etc/passwd"], upar_rows(["x"], 1), None))
    _fails(cfg_for("upar", root), "train.csv", "'/etc/passwd'", "leaves the image folder")
