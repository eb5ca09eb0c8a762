"""The public dataset readers on miniature datasets written in exactly the published on-disk layouts:
real .mat files (scipy, with the cell arrays and structs of the releases), real PNG/JPEG images,
real pickles and CSVs. The builders here are reused by test_public_malformed.py."""
from __future__ import annotations

import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import scipy.io as sio
from PIL import Image

import dataset.public  # noqa: F401  (registers the readers)
from configs import load_config
from dataset.base import UNKNOWN, AttrGroup, DataError, PARData
from dataset.public import merge_datasets
from dataset.public.upar import UPAR_ATTRS
from dataset.registry import read_dataset


# ----------------------------------------------------------------------------- builders
def write_image(path: Path, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    px = np.random.default_rng(seed).integers(0, 255, (8, 4, 3), dtype=np.uint8)
    Image.fromarray(px).save(path)  # format from the suffix: .png / .jpg


def cell(items) -> np.ndarray:
    """An N x 1 MATLAB cell array (strings become char arrays, dicts become structs)."""
    arr = np.empty((len(items), 1), dtype=object)
    for i, x in enumerate(items):
        arr[i, 0] = x
    return arr


def cfg_for(yaml: str, root: Path, *opts: str):
    return load_config(f"configs/{yaml}.yaml", ["DATASET.ROOT", str(root), *opts])


PETA_NAMES = ["personalLess30", "personalLess45", "personalLess60", "personalLarger60", "carryingBackpack",
              "personalMale", "upperBodyBlack", "personalLess15", "hairBlack", "footwearBlack"]
PETA_EVAL = [1, 2, 3, 4, 5, 6]  # 1-based, as in PETA.mat


def peta_fields(n: int = 12) -> dict:
    rng = np.random.default_rng(1)
    raw = np.zeros((n, 4 + len(PETA_NAMES)))
    raw[:, 0] = np.arange(1, n + 1)  # bookkeeping columns (image index, ...)
    raw[:, 4:] = rng.integers(0, 2, (n, len(PETA_NAMES)))
    perm = np.arange(1, n + 1)
    parts = []
    for k in range(2):  # the release has 5 random partitions; 2 keep the file small
        p = perm if k == 0 else perm[::-1]
        parts.append({"train": p[:6].reshape(-1, 1).astype(float),  # MATLAB doubles, column vectors
                      "val": p[6:8].reshape(-1, 1).astype(float), "test": p[8:].reshape(-1, 1).astype(float)})
    return {"labelData": raw, "attribute": cell(PETA_NAMES),
            "selected_attribute": np.asarray(PETA_EVAL).reshape(-1, 1), "partion_attribute": cell(parts)}


def build_peta(root: Path, fields: dict | None = None, n: int = 12) -> Path:
    fields = peta_fields(n) if fields is None else fields
    root.mkdir(parents=True, exist_ok=True)
    sio.savemat(root / "PETA.mat", {"peta": fields})
    for i in range(n):
        write_image(root / "images" / f"{i + 1:05d}.png", i)
    return root


PA100K_NAMES = ["Female", "AgeOver60", "Age18-60", "AgeLess18", "Front", "Side", "Back", "Hat", "Glasses",
                "HandBag", "ShoulderBag", "Backpack", "HoldObjectsInFront", "ShortSleeve", "LongSleeve",
                "UpperStride", "UpperLogo", "UpperPlaid", "UpperSplice", "LowerStripe", "LowerPattern", "LongCoat",
                "Trousers", "Shorts", "Skirt&Dress", "boots"]
PA100K_SIZES = {"train": 5, "val": 2, "test": 3}


def pa100k_fields() -> dict:
    rng = np.random.default_rng(2)
    fields, k = {"attributes": cell(PA100K_NAMES)}, 0
    for s, n in PA100K_SIZES.items():
        fields[f"{s}_images_name"] = cell([f"{k + i + 1:06d}.jpg" for i in range(n)])
        fields[f"{s}_label"] = rng.integers(0, 2, (n, 26)).astype(np.uint8)
        k += n
    return fields


def build_pa100k(root: Path, fields: dict | None = None) -> Path:
    fields = pa100k_fields() if fields is None else fields
    root.mkdir(parents=True, exist_ok=True)
    sio.savemat(root / "annotation.mat", fields)
    for i in range(sum(PA100K_SIZES.values())):
        write_image(root / "data" / f"{i + 1:06d}.jpg", i)
    return root


RAPV1_NAMES = (["Female", "AgeLess16", "Age17-30", "Age31-45", "BodyFat", "BodyNormal", "BodyThin", "Customer",
                "Clerk"] + [f"hs-Attr{i}" for i in range(9, 51)] + ["faceFront", "faceBack", "up-Black", "low-Black"])
RAPV1_N = 20


def rap_name(i: int) -> str:
    return f"CAM01_2014-02-15_20140215161032-20140215162620_tarid{i}_frame{100 + i}_line1.png"


def rapv1_fields() -> dict:
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, (RAPV1_N, len(RAPV1_NAMES))).astype(np.float64)
    labels[0, 0] = 2  # gender "uncertain"
    labels[3, 5] = 2
    parts = []
    for k in range(5):
        p = np.roll(np.arange(1, RAPV1_N + 1), k)
        parts.append({"train_index": p[:15].reshape(1, -1), "test_index": p[15:].reshape(1, -1)})
    # field order as in the release (published loaders index it by position)
    chinese = cell([f"c{i}" for i in range(len(RAPV1_NAMES))])
    return {"partion": cell(parts), "label": labels, "attribute_chinese": chinese,
            "attribute_eng": cell(RAPV1_NAMES), "position": np.zeros((RAPV1_N, 16), np.int32),
            "imagesname": cell([rap_name(i) for i in range(RAPV1_N)]), "attribute_exp": cell(RAPV1_NAMES[:51])}


RAPV2_NAMES = ["Femal", "AgeLess16", "Age17-30", "Age31-45", "Age46-60", "AgeBiger60", "BodyFatter", "BodyFat",
               "BodyNormal", "BodyThin", "BodyThiner", "Customer", "Employee", "hs-BaldHead", "hs-LongHair", "ub-Shirt"]
RAPV2_SELECTED = [1, 2, 3, 4, 5, 8, 9, 10, 12, 13, 14, 15, 16]  # 1-based, as selected_attribute
RAPV2_N = 15


def rapv2_fields() -> dict:
    rng = np.random.default_rng(4)
    data = rng.integers(0, 2, (RAPV2_N, len(RAPV2_NAMES))).astype(np.float64)
    data[2, 0] = 2
    parts = np.empty((1, 5), dtype=object)  # a 1 x 5 cell in the release
    for k in range(5):
        p = np.roll(np.arange(1, RAPV2_N + 1), k)
        parts[0, k] = {"train_index": p[:9].reshape(1, -1), "val_index": p[9:12].reshape(1, -1),
                       "test_index": p[12:].reshape(1, -1)}
    return {"name": cell([rap_name(i) for i in range(RAPV2_N)]), "data": data, "attribute": cell(RAPV2_NAMES),
            "selected_attribute": np.asarray(RAPV2_SELECTED).reshape(1, -1), "partition_attribute": parts,
            "person_identity": np.arange(RAPV2_N).reshape(-1, 1)}


def build_rap(root: Path, fields: dict, n: int) -> Path:
    (root / "RAP_annotation").mkdir(parents=True, exist_ok=True)
    sio.savemat(root / "RAP_annotation" / "RAP_annotation.mat", {"RAP_annotation": fields})
    for i in range(n):
        write_image(root / "RAP_dataset" / rap_name(i), i)
    return root


class EasyDict(dict):
    """The attribute/item mirroring of the `easydict` package, pickled under its name."""

    __module__ = "easydict"  # so pickle writes the global 'easydict.EasyDict' as the real files do

    def __init__(self, d=None, **kw):
        super().__init__()
        for k, v in {**(d or {}), **kw}.items():
            setattr(self, k, v)

    def __setattr__(self, name, value):
        if isinstance(value, dict) and not isinstance(value, EasyDict):
            value = EasyDict(value)
        super().__setattr__(name, value)
        super().__setitem__(name, value)

    __setitem__ = __setattr__

    def __delitem__(self, name):
        super().__delattr__(name)
        super().__delitem__(name)


PKL_NAMES = ["Female", "AgeLess16", "Age17-30", "Hat", "up-Black", "low-Black"]
PKL_N = 10


def pkl_dataset(two_partitions: bool = True) -> EasyDict:
    """A Rethinking_of_PAR dataset_all.pkl (RAP-like: label 2 present, 5-partition style lists)."""
    rng = np.random.default_rng(5)
    d = EasyDict()
    d.description = "rap"
    d.reorder = "group_order"
    d.root = "/mnt/data1/someone/datasets/attribute/RAP/RAP_dataset"  # the writer's machine
    d.image_name = [rap_name(i) for i in range(PKL_N)]
    label = rng.integers(0, 2, (PKL_N, len(PKL_NAMES))).astype(np.uint8)
    label[1, 0] = 2
    d.label = label
    d.attr_name = list(PKL_NAMES)
    d.label_idx = EasyDict(eval=[3, 0, 1, 2], color=[4, 5], extra=range(4, 4))
    d.partition = EasyDict()
    perms = [np.arange(PKL_N), np.arange(PKL_N)[::-1].copy()]
    if two_partitions:
        d.partition.train = [p[:5] for p in perms]
        d.partition.val = [p[5:7] for p in perms]
        d.partition.test = [p[7:] for p in perms]
        d.partition.trainval = [p[:7] for p in perms]
    else:  # PA100k style: single arrays
        d.partition.train, d.partition.val, d.partition.test = perms[0][:5], perms[0][5:7], perms[0][7:]
    d.weight_train = [np.mean(label[p[:5]], axis=0).astype(np.float32) for p in perms]
    return d


def build_pkl(root: Path, obj, monkeypatch, protocol: int = 4, images: bool = True) -> Path:
    fake = types.ModuleType("easydict")
    fake.EasyDict = EasyDict
    monkeypatch.setitem(sys.modules, "easydict", fake)
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_all.pkl").write_bytes(pickle.dumps(obj, protocol=protocol))
    if images:
        for i in range(PKL_N):
            write_image(root / "RAP_dataset" / rap_name(i), i)
    return root


UPAR_TRAIN = ["Market1501/bounding_box_train/0002_c1s1_000451_03.jpg",
              "PA100k/release_data/release_data/000001.jpg",
              "PETA/images/00010.png",
              "Market1501/bounding_box_train/0007_c2s3_070952_01.jpg"]
UPAR_VAL = ["PA100k/release_data/release_data/000002.jpg", "PETA/images/00011.png"]


def upar_rows(paths, seed: int) -> np.ndarray:
    labels = np.random.default_rng(seed).integers(0, 2, (len(paths), 40))
    labels[0, 3] = -1  # not annotated
    return labels


def csv_text(paths, labels, header: str | None) -> str:
    lines = [header] if header is not None else []
    lines += [",".join([p, *map(str, row)]) for p, row in zip(paths, labels)]
    return "\n".join(lines) + "\n"


def build_upar(root: Path, train_header: str | None = ",".join(UPAR_ATTRS),
               val_header: str | None = "# image," + ",".join(UPAR_ATTRS)) -> Path:
    for p in UPAR_TRAIN + UPAR_VAL:
        write_image(root / p)
    train = root / "phase1/annotations/phase1/train/train.csv"
    val = root / "phase2/annotations/val_gt/val_gt.csv"
    train.parent.mkdir(parents=True, exist_ok=True)
    val.parent.mkdir(parents=True, exist_ok=True)
    train.write_text(csv_text(UPAR_TRAIN, upar_rows(UPAR_TRAIN, 6), train_header))
    val.write_text(csv_text(UPAR_VAL, upar_rows(UPAR_VAL, 7), val_header))
    return root


def group(data: PARData, name: str) -> AttrGroup:
    return next(g for g in data.groups if g.name == name)


# ----------------------------------------------------------------------------- PETA
def test_peta_splits_labels_and_eval_subset(tmp_path):
    root = build_peta(tmp_path / "PETA")
    fields = peta_fields()
    data = read_dataset(cfg_for("peta", root))
    assert data.attr_names == PETA_NAMES[:6]
    np.testing.assert_array_equal(data.labels, fields["labelData"][:, 4:10])
    np.testing.assert_array_equal(data.splits["train"], np.arange(6))
    np.testing.assert_array_equal(data.splits["val"], [6, 7])
    np.testing.assert_array_equal(data.splits["test"], [8, 9, 10, 11])
    np.testing.assert_array_equal(data.splits["trainval"], np.arange(8))
    assert data.image_paths[0] == root / "images" / "00001.png" and data.image_paths[11].is_file()
    assert data.image_root == root / "images"
    age = group(data, "age")  # personalLess15 is not evaluated: exclusive -> optional
    assert age.kind == "optional" and age.attrs == ("personalLess30", "personalLess45", "personalLess60",
                                                    "personalLarger60")


def test_peta_all_attributes_and_second_partition(tmp_path):
    root = build_peta(tmp_path / "PETA")
    data = read_dataset(cfg_for("peta", root, "DATASET.LABEL", "all", "DATASET.SPLIT_ID", "1"))
    assert data.attr_names == PETA_NAMES and data.labels.shape == (12, 10)
    np.testing.assert_array_equal(data.splits["train"], np.arange(11, 5, -1))  # reversed permutation, 0-based
    assert group(data, "age").kind == "exclusive" and len(group(data, "age").attrs) == 5


# ----------------------------------------------------------------------------- PA100k
def test_pa100k_splits_and_labels(tmp_path):
    root = build_pa100k(tmp_path / "PA100k")
    fields = pa100k_fields()
    data = read_dataset(cfg_for("pa100k", root))
    assert data.attr_names == PA100K_NAMES
    np.testing.assert_array_equal(data.labels, np.concatenate([fields[f"{s}_label"] for s in PA100K_SIZES]))
    assert {s: len(data.splits[s]) for s in ("train", "val", "test", "trainval")} == {
        "train": 5, "val": 2, "test": 3, "trainval": 7}
    np.testing.assert_array_equal(data.splits["test"], [7, 8, 9])
    assert data.image_paths[7] == root / "data" / "000008.jpg" and data.image_paths[7].is_file()
    assert [(g.name, g.kind) for g in data.groups] == [("age", "exclusive"), ("orientation", "exclusive")]
    all_data = read_dataset(cfg_for("pa100k", root, "DATASET.LABEL", "all"))
    assert all_data.attr_names == data.attr_names  # all 26 are evaluated


# ----------------------------------------------------------------------------- RAP
def test_rapv1_eval_subset_uncertain_and_carved_val(tmp_path):
    root = build_rap(tmp_path / "RAPv1", rapv1_fields(), RAPV1_N)
    fields = rapv1_fields()
    data = read_dataset(cfg_for("rapv1", root))
    assert data.attr_names == RAPV1_NAMES[:51]
    assert data.labels[0, 0] == 0 and data.labels[3, 5] == 0  # 2 -> 0 as Rethinking_of_PAR
    assert set(np.unique(data.labels)) <= {0.0, 1.0}
    np.testing.assert_array_equal(data.splits["trainval"], np.arange(15))
    np.testing.assert_array_equal(data.splits["test"], np.arange(15, 20))
    train, val = data.splits["train"], data.splits["val"]
    assert len(val) == 2 and not set(train) & set(val) and sorted([*train, *val]) == list(range(15))
    assert data.image_paths[4] == root / "RAP_dataset" / rap_name(4)
    assert [(g.name, g.kind) for g in data.groups] == [("age", "optional"), ("body_shape", "exclusive"),
                                                       ("role", "exclusive")]
    masked = read_dataset(cfg_for("rapv1", root, "DATASET.UNCERTAIN_LABEL", "unknown", "DATASET.LABEL", "all",
                                  "DATASET.SPLIT_ID", "2"))
    assert masked.labels[0, 0] == UNKNOWN and masked.labels[3, 5] == UNKNOWN
    assert masked.labels.shape == (20, 55)
    np.testing.assert_array_equal(masked.labels[1], fields["label"][1])
    np.testing.assert_array_equal(masked.splits["test"], np.roll(np.arange(20), 2)[15:])
    tv = np.roll(np.arange(20), 2)[:15]  # holds row 0, whose uncertain gender is masked from the prior
    assert masked.label_priors("trainval")[0] == pytest.approx(fields["label"][tv[tv != 0], 0].mean())


def test_rapv2_selected_attributes_partitions_and_groups(tmp_path):
    root = build_rap(tmp_path / "RAPv2", rapv2_fields(), RAPV2_N)
    fields = rapv2_fields()
    data = read_dataset(cfg_for("rapv2", root, "DATASET.SPLIT_ID", "1"))
    assert data.attr_names == [RAPV2_NAMES[i - 1] for i in RAPV2_SELECTED]
    expected = fields["data"][:, [i - 1 for i in RAPV2_SELECTED]]
    expected[expected == 2] = 0
    np.testing.assert_array_equal(data.labels, expected)
    p = np.roll(np.arange(RAPV2_N), 1)
    np.testing.assert_array_equal(data.splits["train"], p[:9])
    np.testing.assert_array_equal(data.splits["val"], p[9:12])
    np.testing.assert_array_equal(data.splits["test"], p[12:])
    np.testing.assert_array_equal(data.splits["trainval"], p[:12])
    kinds = {g.name: (g.kind, len(g.attrs)) for g in data.groups}
    assert kinds == {"age": ("optional", 4), "body_shape": ("optional", 3), "role": ("exclusive", 2)}
    full = read_dataset(cfg_for("rapv2", root, "DATASET.LABEL", "all"))
    assert full.attr_names == RAPV2_NAMES
    assert {g.name: g.kind for g in full.groups} == {"age": "exclusive", "body_shape": "exclusive",
                                                     "role": "exclusive"}


# ----------------------------------------------------------------------------- Rethinking_of_PAR pickle
@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_pkl_reads_rethinking_pickle_safely(tmp_path, monkeypatch, protocol):
    root = build_pkl(tmp_path / "RAP", pkl_dataset(), monkeypatch, protocol)
    cfg = cfg_for("pkl", root, "DATASET.GROUPS", "[]", "DATASET.SPLIT_ID", "1")
    data = read_dataset(cfg)
    src = pkl_dataset()
    assert data.attr_names == ["Hat", "Female", "AgeLess16", "Age17-30"]  # label_idx.eval order
    expected = src.label[:, [3, 0, 1, 2]].astype(np.float32)
    expected[expected == 2] = 0
    np.testing.assert_array_equal(data.labels, expected)
    np.testing.assert_array_equal(data.splits["train"], np.arange(PKL_N)[::-1][:5])
    np.testing.assert_array_equal(data.splits["test"], np.arange(PKL_N)[::-1][7:])
    assert data.image_root == root / "RAP_dataset"  # the pickle's /mnt/... root is not on this machine
    assert data.image_paths[0] == root / "RAP_dataset" / rap_name(0)


def test_pkl_single_partition_all_labels_and_groups(tmp_path, monkeypatch):
    root = build_pkl(tmp_path / "X", pkl_dataset(two_partitions=False), monkeypatch)
    data = read_dataset(cfg_for("pkl", root / "dataset_all.pkl", "DATASET.LABEL", "all", "DATASET.UNCERTAIN_LABEL",
                                "unknown", "DATASET.GROUPS", "[[age, exclusive, AgeLess16, Age17-30]]"))
    assert data.attr_names == PKL_NAMES and data.labels[1, 0] == UNKNOWN
    np.testing.assert_array_equal(data.splits["trainval"], np.arange(7))  # train + val when absent
    assert data.groups == [AttrGroup("age", "exclusive", ("AgeLess16", "Age17-30"))]


# ----------------------------------------------------------------------------- UPAR
def test_upar_csvs_unknown_labels_and_splits(tmp_path):
    root = build_upar(tmp_path / "UPAR")
    data = read_dataset(cfg_for("upar", root))
    assert data.attr_names == UPAR_ATTRS and len(UPAR_ATTRS) == 40
    train, val = upar_rows(UPAR_TRAIN, 6).astype(np.float32), upar_rows(UPAR_VAL, 7).astype(np.float32)
    np.testing.assert_array_equal(data.labels, np.concatenate([train, val]))
    assert data.labels[0, 3] == UNKNOWN and data.labels[4, 3] == UNKNOWN
    assert (data.labels == UNKNOWN).sum() == 2
    np.testing.assert_array_equal(data.splits["train"], np.arange(4))
    np.testing.assert_array_equal(data.splits["val"], [4, 5])
    assert "test" not in data.splits and len(data.splits["trainval"]) == 6
    assert data.image_paths[1] == root / UPAR_TRAIN[1] and data.image_paths[5].is_file()
    assert data.image_root == root
    assert {g.name: (g.kind, len(g.attrs)) for g in data.groups} == {
        "age": ("exclusive", 3), "hair": ("exclusive", 3), "upper_colour": ("exclusive", 12),
        "lower_colour": ("exclusive", 12), "eyewear": ("optional", 2)}
    # the masked label is excluded from the prior: 1 known row of 4 for Gender-Female in train
    known = train[1:, 3]
    assert data.label_priors("train")[3] == pytest.approx(known.mean())


def test_upar_headerless_and_reordered_columns(tmp_path):
    order = list(reversed(UPAR_ATTRS))
    root = tmp_path / "UPAR"
    build_upar(root, train_header=None)
    val = root / "phase2/annotations/val_gt/val_gt.csv"
    rows = upar_rows(UPAR_VAL, 7)
    val.write_text(csv_text(UPAR_VAL, rows[:, ::-1], "# image," + ",".join(order)))
    data = read_dataset(cfg_for("upar", root))
    assert data.attr_names == UPAR_ATTRS  # names of a header-less file are the standard 40
    np.testing.assert_array_equal(data.split_labels("val"), np.where(rows == -1, UNKNOWN, rows))


# ----------------------------------------------------------------------------- mixed training
def _small(name, attrs, labels, root, splits, groups=()):
    return PARData(name, [root / f"{name}_{i}.png" for i in range(len(labels))], np.asarray(labels, np.float32),
                   attrs, splits, list(groups), root)


def test_merge_datasets_maps_attributes_and_offsets_splits(tmp_path):
    a = _small("A", ["Female", "Hat", "Old", "Young"], [[1, 0, 0, 1], [0, 1, 1, 0], [1, 1, 0, 0]],
               tmp_path / "a", {"train": [0, 1], "test": [2]}, [AttrGroup("age", "optional", ("Old", "Young"))])
    b = _small("B", ["personalMale", "hatOn", "Glasses"], [[1, 0, 1], [0, 1, UNKNOWN]],
               tmp_path / "b", {"train": [1], "val": [0]})
    merged = merge_datasets([a, b], ["Female", "Hat", "Glasses", "Old", "Young"],
                            mapping={"B": {"personalMale": "!Female", "hatOn": "Hat"}})
    assert merged.name == "A+B" and merged.attr_names == ["Female", "Hat", "Glasses", "Old", "Young"]
    U = UNKNOWN
    np.testing.assert_array_equal(merged.labels, [[1, 0, U, 0, 1], [0, 1, U, 1, 0], [1, 1, U, 0, 0],
                                                  [0, 0, 1, U, U], [1, 1, U, U, U]])
    np.testing.assert_array_equal(merged.splits["train"], [0, 1, 4])
    np.testing.assert_array_equal(merged.splits["val"], [3])
    np.testing.assert_array_equal(merged.splits["test"], [2])
    np.testing.assert_array_equal(merged.splits["B/train"], [4])
    assert merged.image_paths[3] == tmp_path / "b" / "B_0.png"
    assert merged.image_root == tmp_path
    assert merged.groups == [AttrGroup("age", "optional", ("Old", "Young"))]
    # rows whose source lacks an attribute do not count towards its prior
    assert merged.label_priors("train")[2] == 0.0 and merged.label_priors("val")[2] == 1.0


def test_merge_datasets_rejects_unrelated_and_clashing_attributes(tmp_path):
    a = _small("A", ["x"], [[1]], tmp_path, {"train": [0]})
    with pytest.raises(DataError, match="A shares no attribute"):
        merge_datasets([a], ["y"])
    b = _small("B", ["p", "q"], [[1, 0]], tmp_path, {"train": [0]})
    with pytest.raises(DataError, match="'p' and 'q' both map to 'y'"):
        merge_datasets([b], ["y"], mapping={"B": {"p": "y", "q": "y"}})
