"""The reader of PETA's original release (``PETA dataset/<subset>/archive/``), its PETA.mat alignment, the
identity-disjoint split and the PETA -> NATIVE attribute map: on a miniature release written here, and on
the real release when it is present (data/PETA or ../shared/data/PETA)."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import scipy.io as sio
from PIL import Image

import dataset.public  # noqa: F401  (registers the readers)
from configs import load_config
from dataset.attr_map import load_attr_map, peta_to_native
from dataset.attributes import NATIVE_46
from dataset.base import DataError, PARData
from dataset.public.peta import load_peta_mat
from dataset.public.peta_raw import (PETA_ATTRS, PETA_EVAL, PETA_SUBSETS, RAW_DIR, align_mat, camera_of,
                                     read_raw_release)
from dataset.registry import read_dataset
from tests.conftest import REPO


def peta_cfg(root: Path, *opts: str, yaml: str = "peta_lite"):
    return load_config(REPO / "configs" / f"{yaml}.yaml", ["DATASET.ROOT", str(root), *opts])


# ----------------------------------------------------------------------------- a miniature release
# subset -> ({Label.txt ID: attributes}, image files); CUHK lines are per image, the rest per person.
MINI = {
    "3DPeS": ({"1": "personalMale hairShort", "10": "personalFemale"},
              ["1_3_FRAME_26_RGB.jpg", "1_4_FRAME_70_RGB.jpg", "10_B_5_FRAME_2_RGB.jpg"]),
    "CUHK": ({"0002.png": "personalMale", "0003.png": "personalFemale hairLong", "0000.png": "personalMale"},
             ["0002.png", "0003.bmp"]),  # 0000.png names no image; 0003 is now a BMP
    "GRID": ({"0001": "upperBodyRed"}, ["0001_1_25004_107_32_106_221.jpeg", "0001_2_25023_116_134_128_330.jpeg"]),
    "i-LID": ({"0001": "carryingBackpack", "0002": "carryingNothing"},
              ["0001_001.jpg", "0001_002.jpg", "0002_001.jpg"]),
    "MIT": ({"00001": "personalMale", "00002": "personalFemale"}, ["00001_male_fore.jpg", "00002_female_back.JPG"]),
    "PRID": ({"0001": "personalMale upperBodyBlack footwearSneakers accessoryFaceMask", "0002": "personalFemale"},
             ["0001_a.jpg", "0001_b.jpg", "0002_b.jpg"]),
    "SARC3D": ({"001": "lowerBodyJeans"}, ["001_Right.jpg", "001_back.jpg", "001_front.jpg"]),
    "TownCentre": ({"5": "accessoryHat", "8": "accessoryHat"}, ["5_16.jpg", "5_8.jpg"]),  # ID 8 has no image
    "VIPeR": ({"0001": "personalMale", "0002": "personalFemale"},
              ["0001_090_a.bmp", "0001_000_b.bmp", "0002_045_b.bmp"]),
}
N_MINI = sum(len(files) for _, files in MINI.values())


def write_release(root: Path, mini: dict = MINI) -> Path:
    for k, (lines, files) in enumerate(mini.values()):
        folder = root / RAW_DIR / list(mini)[k] / "archive"
        folder.mkdir(parents=True)
        (folder / "Label.txt").write_text("".join(f"{i} {a}\n" for i, a in lines.items()))
        for j, name in enumerate(files):
            px = np.random.default_rng(10 * k + j).integers(0, 255, (4, 2, 3), dtype=np.uint8)
            fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP"}[Path(name).suffix.lower()]
            Image.fromarray(px).save(folder / name, format=fmt)
    return root


def test_mini_counts_labels_identities_and_cameras(tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        raw = read_raw_release(write_release(tmp_path) / RAW_DIR)
    assert len(raw.image_paths) == N_MINI and raw.labels.shape == (N_MINI, 105)
    assert raw.subsets[0] == "3DPeS" and raw.subsets[-1] == "VIPeR"  # case-insensitive order: i-LID after GRID
    assert raw.subsets.index("i-LID") == raw.subsets.index("GRID") + 2
    by_name = {p.name: i for i, p in enumerate(raw.image_paths)}
    cams = {n: raw.cameras[i] for n, i in by_name.items()}
    assert cams["0001_a.jpg"] == "a" and cams["0002_b.jpg"] == "b"  # PRID
    assert cams["0001_1_25004_107_32_106_221.jpeg"] == "1"  # GRID
    assert cams["0001_090_a.bmp"] == "a" and cams["0002_045_b.bmp"] == "b"  # VIPeR: <id>_<angle>_<cam>
    assert cams["00001_male_fore.jpg"] == "front" and cams["00002_female_back.JPG"] == "back"  # MIT
    assert cams["001_Right.jpg"] == "right" and cams["001_back.jpg"] == "back"  # SARC3D, mixed case
    assert cams["1_3_FRAME_26_RGB.jpg"] == cams["0001_001.jpg"] == cams["0002.png"] == ""  # 3DPeS, i-LID, CUHK
    # CUHK: per-image lines matched by stem (0003.png -> 0003.bmp), one identity per image
    assert raw.persons[by_name["0002.png"]] == "2" and raw.persons[by_name["0003.bmp"]] == "3"
    assert raw.labels[by_name["0003.bmp"], PETA_ATTRS.index("hairLong")] == 1
    prid = [by_name["0001_a.jpg"], by_name["0001_b.jpg"]]
    assert raw.persons[prid[0]] == raw.persons[prid[1]] == "1"
    np.testing.assert_array_equal(raw.labels[prid[0]], raw.labels[prid[1]])
    assert raw.labels[prid[0], PETA_ATTRS.index("footwearSneaker")] == 1  # Label.txt's footwearSneakers
    assert raw.labels[prid[0]].sum() == 3  # accessoryFaceMask is discarded by the release
    assert len(set(raw.identity_keys())) == 15
    assert "CUHK: 1 Label.txt line(s) name no image (0000.png)" in caplog.text
    assert "TownCentre: 1 Label.txt line(s) name no image (8)" in caplog.text
    assert f"PETA raw release: {N_MINI} images, 15 identities, 9 subsets" in caplog.text


def test_camera_rules_need_no_files():
    assert camera_of("viper", "000_45_b") == "b" and camera_of("TownCentre", "5_16") == ""
    assert camera_of("CAVIAR4REID", "0001_001") == "" and camera_of("3DPeS", "1_3_FRAME_26_RGB") == ""


def test_mini_identity_split_disjoint_and_deterministic(tmp_path):
    root = write_release(tmp_path)
    data = read_dataset(peta_cfg(root))
    assert data.attr_names == PETA_ATTRS and len(data.image_paths) == N_MINI
    assert data.identities.shape == data.cameras.shape == (N_MINI,)
    assert data.image_root == root / RAW_DIR and all(p.is_file() for p in data.image_paths)
    ids = {s: set(data.identities[data.splits[s]].tolist()) for s in ("train", "val", "test")}
    assert not (ids["train"] & ids["val"] or ids["train"] & ids["test"] or ids["val"] & ids["test"])
    assert sum(len(data.splits[s]) for s in ("train", "val", "test")) == N_MINI
    again = read_dataset(peta_cfg(root))
    for s in data.splits:
        np.testing.assert_array_equal(data.splits[s], again.splits[s])
    names = [p.name for p in data.image_paths]
    assert data.cameras[names.index("0002.png")] == -1
    assert data.cameras[names.index("0001_a.jpg")] != data.cameras[names.index("0001_b.jpg")]
    ev = read_dataset(peta_cfg(root, "DATASET.LABEL", "eval"))
    assert ev.attr_names == PETA_EVAL and ev.identities is not None


def test_mini_misspelled_attribute_and_duplicate_id(tmp_path):
    mini = dict(MINI, PRID=({"0001": "personalMale", "0002": "upperBodyBlu"}, ["0001_a.jpg"]))
    root = write_release(tmp_path / "a", mini)
    with pytest.raises(DataError, match=r"PRID/archive/Label.txt, line 2: unknown attribute 'upperBodyBlu'"):
        read_dataset(peta_cfg(root))
    root = write_release(tmp_path / "b")
    label = root / RAW_DIR / "GRID" / "archive" / "Label.txt"
    label.write_text(label.read_text() + "1 upperBodyBlue\n")  # 0001 again, as a number
    with pytest.raises(DataError, match=r"GRID/archive/Label.txt: ID 1 appears on lines 1 and 2"):
        read_dataset(peta_cfg(root))


def test_mini_config_and_layout_errors(tmp_path):
    root = write_release(tmp_path / "r")
    with pytest.raises(DataError, match="DATASET.PETA_SPLIT = 'zs'"):
        read_dataset(peta_cfg(root, "DATASET.PETA_SPLIT", "zs"))
    with pytest.raises(DataError, match="DATASET.PETA_SPLIT = mat but no PETA.mat"):
        read_dataset(peta_cfg(root, "DATASET.PETA_SPLIT", "mat"))
    with pytest.raises(DataError, match="PETA_SPLIT_FRACTIONS"):
        read_dataset(peta_cfg(root, "DATASET.PETA_SPLIT_FRACTIONS", "[0.9, 0.0, 0.1]"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="'PETA dataset' folder"):
        read_dataset(peta_cfg(tmp_path / "empty"))


def write_mat(root: Path, raw, absent: int = 2, n_absent: int = 3) -> np.ndarray:
    """A PETA.mat beside the release: rows of the raw images in order, plus ``n_absent`` rows of subset
    ``absent`` (1-based, CAVIAR4REID) that has no folder; 5..39 = evaluated columns, as the release."""
    sub = np.array([PETA_SUBSETS.index(next(t for t in PETA_SUBSETS if t.lower() == s.lower())) + 1
                    for s in raw.subsets])
    book = np.stack([np.zeros(len(sub)), np.zeros(len(sub)), sub, [int(p) for p in raw.persons]], 1)
    at = int(np.searchsorted(sub, absent))
    book = np.insert(book, [at] * n_absent, [[0, 0, absent, 7]], axis=0)
    labels = np.insert(raw.labels, [at] * n_absent, 0, axis=0)
    n = len(book)
    part = {"train": np.arange(1, n - 2, dtype=float).reshape(-1, 1), "val": np.array([[n - 2.0]]),
            "test": np.array([[n - 1.0], [n]])}
    names = np.empty((105, 1), dtype=object)
    names[:, 0] = PETA_ATTRS
    parts = np.empty((1, 1), dtype=object)
    parts[0, 0] = part
    sio.savemat(root / "PETA.mat", {"peta": {"data": np.hstack([book, labels]), "attribute": names,
                                             "selected_attribute": np.arange(5, 40).reshape(-1, 1),
                                             "partion_attribute": parts}})
    return book


def test_mini_mat_partition_absent_rows_and_row_mismatch(tmp_path, caplog):
    root = write_release(tmp_path)
    raw = read_raw_release(root / RAW_DIR)
    write_mat(root, raw)
    with caplog.at_level(logging.INFO):
        data = read_dataset(peta_cfg(root, "DATASET.PETA_SPLIT", "mat", "DATASET.LABEL", "eval"))
    assert data.attr_names == PETA_EVAL  # 5..39 count the bookkeeping columns
    assert f"3 of {N_MINI + 3} rows (subset CAVIAR4REID) have no image" in caplog.text
    assert sum(len(data.splits[s]) for s in ("train", "val", "test")) == N_MINI
    book = write_mat(root, raw)
    bad = int(np.flatnonzero(book[:, 2] == 7)[1])  # PRID's second row: identity 1 -> 9
    book[bad, 3] = 9
    mat = load_peta_mat(root / "PETA.mat")
    with pytest.raises(DataError, match=rf"PETA.mat: row {bad + 1} is PRID identity 9, but image 0001_b.jpg"):
        align_mat(raw, book[:, 2], book[:, 3], mat.file)


def test_rethinking_layout_identity_split_reads_peta_mat_identities(tmp_path):
    from tests.test_public_datasets import build_peta, peta_fields

    f = peta_fields()
    f["labelData"][:, 2], f["labelData"][:, 3] = 3, np.arange(12) // 2  # 6 persons of 2 images, in CUHK
    root = build_peta(tmp_path / "PETA", f)
    data = read_dataset(peta_cfg(root, "DATASET.PETA_SPLIT", "identity", "DATASET.LABEL", "eval", yaml="peta"))
    np.testing.assert_array_equal(data.identities, np.arange(12) // 2)
    ids = [set(data.identities[data.splits[s]].tolist()) for s in ("train", "val", "test")]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2]) and all(ids)


# ----------------------------------------------------------------------------- PETA -> NATIVE map
def test_peta_to_native_map_and_its_checks(tmp_path):
    m = peta_to_native()
    assert m["Gender_female"] == ["personalFemale"] and m["U_red"] == ["upperBodyRed"]
    assert m["Backpack"] == ["carryingBackpack"] and m["Age_young"][0] == "personalLess30"
    ages = [a for t in ("Age_young", "Age_adult", "Age_old") for a in m[t]]
    assert sorted(ages) == sorted(["personalLess15", "personalLess30", "personalLess45", "personalLess60",
                                   "personalLarger60"])
    assert "Glasses" not in m and set(m) <= set(NATIVE_46)
    bad = tmp_path / "bad.yaml"
    bad.write_text("map:\n  U_red: [upperBodyRedd]\nunmapped: []\n")
    with pytest.raises(DataError, match="'U_red' lists 'upperBodyRedd'"):
        load_attr_map(bad, PETA_ATTRS, ["U_red"])
    bad.write_text("map:\n  U_red: [upperBodyRed]\n")
    with pytest.raises(DataError, match=r"\['U_blue'\] are neither mapped nor listed"):
        load_attr_map(bad, PETA_ATTRS, ["U_red", "U_blue"])
    bad.write_text("map:\n  Red: [upperBodyRed]\n")
    with pytest.raises(DataError, match="'Red' is not a target attribute"):
        load_attr_map(bad, PETA_ATTRS, ["U_red"])


def test_pardata_identity_codes_are_checked():
    with pytest.raises(DataError, match=r"identities has shape \(3,\), expected \(2,\)"):
        PARData("X", [Path("a"), Path("b")], np.zeros((2, 1)), ["a"], {}, identities=np.arange(3))


# ----------------------------------------------------------------------------- the real release
def peta_root() -> Path | None:
    for p in (REPO / "data" / "PETA", REPO.parent / "shared" / "data" / "PETA"):
        if (p / RAW_DIR).is_dir():
            return p
    return None


@pytest.fixture(scope="module")
def real_raw():
    root = peta_root()
    if root is None:
        pytest.skip("real PETA release not found at data/PETA or ../shared/data/PETA ('PETA dataset/' folder)")
    return root, read_raw_release(root / RAW_DIR)


def test_real_counts(real_raw):
    root, raw = real_raw
    folders = [p for p in (root / RAW_DIR).iterdir() if p.is_dir()]
    n_ids = len(set(raw.identity_keys()))
    print(f"PETA raw: {len(raw.image_paths)} images, {n_ids} identities, {len(folders)} subsets")
    assert len(set(raw.subsets)) == len(folders) and n_ids <= len(raw.image_paths)
    cuhk = [i for i, s in enumerate(raw.subsets) if s == "CUHK"]
    assert len({raw.persons[i] for i in cuhk}) == len(cuhk)  # one identity per CUHK image
    assert all(p.is_file() for p in raw.image_paths[::500])


def test_real_labels_agree_with_peta_mat(real_raw, caplog):
    root, raw = real_raw
    if not (root / "PETA.mat").is_file():
        pytest.skip("PETA.mat not beside the real release")
    mat = load_peta_mat(root / "PETA.mat")
    assert mat.names == PETA_ATTRS and [mat.names[j] for j in mat.eval_idx] == PETA_EVAL
    row_to_raw = align_mat(raw, mat.book[:, 2], mat.book[:, 3], mat.file)
    present = row_to_raw >= 0
    print(f"PETA.mat: {int(present.sum())} rows present, {int((~present).sum())} absent")
    assert sorted(row_to_raw[present]) == list(range(len(raw.image_paths)))  # every image has its row
    np.testing.assert_array_equal(mat.labels[present], raw.labels[row_to_raw[present]])


def test_real_identity_split(real_raw):
    root, raw = real_raw
    data = read_dataset(peta_cfg(root))
    keys = np.asarray(raw.identity_keys())
    seen = [set(keys[data.splits[s]]) for s in ("train", "val", "test")]
    assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])
    assert sum(len(data.splits[s]) for s in ("train", "val", "test")) == len(raw.image_paths)
    again = read_dataset(peta_cfg(root))
    other = read_dataset(peta_cfg(root, "DATASET.SPLIT_SEED", "1"))
    np.testing.assert_array_equal(data.splits["test"], again.splits["test"])
    assert not np.array_equal(data.splits["test"], other.splits["test"])
    share = len(data.splits["test"]) / len(raw.image_paths)
    assert 0.15 < share < 0.25
