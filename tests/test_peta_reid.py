"""PETA's identities as a ReID benchmark (DATASET.PETA_SPLIT reid): the protocol on a miniature raw
release, and on the real one where it is present."""
from __future__ import annotations

import numpy as np
import pytest

from dataset.base import DataError
from dataset.registry import read_dataset
from tests.test_peta_raw import peta_cfg, peta_root, write_release

# PRID: 4 pairs (a + b), 1 person in b only; GRID: 4 pairs (other cameras), 2 unpaired;
# multi-shot: 3DPeS 10 persons x 3 images, i-LID 10 x 2 + 1 single; CUHK is not in the protocol.
MINI_REID = {
    "3DPeS": ({str(i): "personalMale" for i in range(1, 11)},
              [f"{i}_{j}_FRAME_{j}_RGB.jpg" for i in range(1, 11) for j in range(3)]),
    "CUHK": ({"0001.png": "personalMale"}, ["0001.png"]),
    "GRID": ({f"{i:04d}": "upperBodyRed" for i in range(1, 7)},
             [f"{i:04d}_{c}_2500{c}_1_1_1_1.jpeg" for i in range(1, 5) for c in (3, 7)]
             + ["0005_2_1_1_1_1_1.jpeg", "0006_4_1_1_1_1_1.jpeg"]),
    "i-LID": ({f"{i:04d}": "carryingNothing" for i in range(1, 12)},
              [f"{i:04d}_{j:03d}.jpg" for i in range(1, 11) for j in (1, 2)] + ["0011_001.jpg"]),
    "PRID": ({f"{i:04d}": "personalFemale" for i in range(1, 6)},
             [f"{i:04d}_{c}.jpg" for i in range(1, 5) for c in "ab"] + ["0005_b.jpg"]),
}


def mini_reid(tmp_path, seed: int = 0):
    return read_dataset(peta_cfg(write_release(tmp_path / f"r{seed}", MINI_REID), "DATASET.PETA_SPLIT", "reid",
                                 "DATASET.SPLIT_SEED", str(seed)))


def subset_of(data, rows) -> list[str]:
    return [data.image_paths[r].parts[-3] for r in rows]


def test_mini_protocol_splits(tmp_path):
    data = mini_reid(tmp_path)
    s, ids, names = data.splits, data.identities, [p.name for p in data.image_paths]
    assert "CUHK" not in subset_of(data, np.concatenate(list(s.values())))
    # test: half the pairs of each single-shot subset; the query is the pair's first file (PRID: camera a)
    q_names = [names[r] for r in s["query"]]
    assert sorted(subset_of(data, s["query"])) == ["GRID"] * 2 + ["PRID"] * 2
    assert all(n.endswith("_a.jpg") for n in q_names if "_" in n and n.count("_") == 1)
    assert all("_3_" in n for n in q_names if n.endswith(".jpeg"))
    # gallery: the pairs' second images + every unpaired image (distractors)
    g_names = sorted(names[r] for r in s["gallery"])
    assert {"0005_b.jpg", "0005_2_1_1_1_1_1.jpeg", "0006_4_1_1_1_1_1.jpeg"} <= set(g_names) and len(g_names) == 7
    for r in s["query"]:  # exactly one match per query, on another camera
        match = s["gallery"][ids[s["gallery"]] == ids[r]]
        assert len(match) == 1 and data.cameras[match[0]] != data.cameras[r] >= 0
    # train: the other pairs (both images) + the multi-shot persons not in val
    train_ids, test_ids = set(ids[s["train"]]), set(ids[s["test"]])
    assert not train_ids & test_ids and not train_ids & set(ids[s["val"]])
    assert sorted(subset_of(data, s["train"])).count("PRID") == 4 and sorted(subset_of(data, s["train"])).count("GRID") == 4
    # val: 10 % of the 20 multi-shot persons with 2+ images -> 2 persons, one query image each
    assert len(s["val_query"]) == 2 and len(np.unique(ids[s["val_query"]])) == 2
    assert set(ids[s["val_gallery"]]) == set(ids[s["val_query"]])
    assert len(s["train"]) + len(s["val"]) + len(s["test"]) == len(data.image_paths) - 1  # all but CUHK
    np.testing.assert_array_equal(s["query"], mini_reid(tmp_path / "again").splits["query"])


def test_mini_protocol_seed_and_errors(tmp_path):
    a, b = mini_reid(tmp_path, 0), mini_reid(tmp_path, 3)
    assert not (np.array_equal(a.splits["query"], b.splits["query"])
                and np.array_equal(a.splits["val_query"], b.splits["val_query"]))
    only_multi = {k: v for k, v in MINI_REID.items() if k in ("3DPeS", "i-LID")}
    with pytest.raises(DataError, match="paired PRID / GRID"):
        read_dataset(peta_cfg(write_release(tmp_path / "m", only_multi), "DATASET.PETA_SPLIT", "reid"))
    with pytest.raises(DataError, match="PETA_SPLIT = .reids.*or reid"):
        read_dataset(peta_cfg(tmp_path / "m", "DATASET.PETA_SPLIT", "reids"))


@pytest.fixture(scope="module")
def real_reid():
    root = peta_root()
    if root is None:
        pytest.skip("real PETA release not found at data/PETA or ../shared/data/PETA ('PETA dataset/' folder)")
    return read_dataset(peta_cfg(root, "DATASET.PETA_SPLIT", "reid"))


def test_real_protocol(real_reid):
    s, ids, cams = real_reid.splits, real_reid.identities, real_reid.cameras
    print({k: (len(v), len(np.unique(ids[v]))) for k, v in s.items()})
    # PRID and GRID hold 200 and 250 paired persons: half of each is test
    assert sorted(subset_of(real_reid, s["query"])).count("PRID") == 100
    assert sorted(subset_of(real_reid, s["query"])).count("GRID") == 125
    g = s["gallery"]
    n_match = np.array([(ids[g] == ids[r]).sum() for r in s["query"]])
    assert (n_match == 1).all() and (cams[s["query"]] >= 0).all()
    assert not set(ids[s["train"]]) & set(ids[s["test"]]) and not set(ids[s["train"]]) & set(ids[s["val"]])
    assert len(np.unique(ids[s["train"]])) > 700 and len(s["val_query"]) >= 50
