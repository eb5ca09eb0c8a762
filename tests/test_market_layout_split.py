"""ReID on any Market-layout folder (#23): a VIPeR / PRID / GRID-style folder, one image per identity and
camera, still gets a validation pair with both sides non-empty (query from one camera, gallery from the
others), and Market-1501's own draw is unchanged where it leaves a gallery."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import dataset  # noqa: F401  (registers the readers)
from configs import load_config
from dataset import used_splits
from dataset.public.market1501 import split_rows
from dataset.registry import read_dataset
from tools.evaluation.reid import evaluate_reid

REPO = Path(__file__).resolve().parents[1]


def write_pairs_folder(root: Path, n_ids: int = 20) -> Path:
    """Each identity: exactly one image from camera 1 and one from camera 2 (VIPeR-style)."""
    rng = np.random.default_rng(0)
    names = {"bounding_box_train": [f"{i:04d}_c{c}s1_000100_01" for i in range(1, n_ids + 1) for c in (1, 2)],
             "query": ["0101_c1s1_000100_00"], "bounding_box_test": ["0101_c2s1_000100_01"]}
    for folder, files in names.items():
        (root / folder).mkdir(parents=True)
        for n in files:
            Image.fromarray(rng.integers(0, 255, (16, 8, 3), dtype=np.uint8)).save(root / folder / f"{n}.jpg")
    return root


def reid_cfg(root: Path):
    cfg = load_config(REPO / "configs" / "market1501.yaml", ["DATASET.ROOT", str(root), "DATASET.ATTR_FILE", "none"])
    cfg.defrost()
    cfg.TASK = "reid"
    return cfg


def test_one_image_per_identity_and_camera_gets_a_cross_camera_validation_pair(tmp_path, caplog):
    cfg = reid_cfg(write_pairs_folder(tmp_path / "pairs"))
    with caplog.at_level(logging.WARNING):
        data = read_dataset(cfg)
    s = data.splits
    assert "cut instead per identity" in caplog.text
    # 20 identities -> round(0.1 x 20) = 2 validation identities, 2 images each: 1 query + 1 gallery per identity
    assert len(s["val"]) == 4 and len(s["val_query"]) == 2 and len(s["val_gallery"]) == 2
    q, g = s["val_query"], s["val_gallery"]
    assert sorted(data.identities[q]) == sorted(data.identities[g])  # every query identity is in the gallery
    for pid in data.identities[q]:  # ... seen there from the other camera
        assert data.cameras[q][data.identities[q] == pid] != data.cameras[g][data.identities[g] == pid]
    assert "val_gallery" in used_splits(cfg, data)  # the ReID trainer no longer stops
    # an embedding that is the identity itself: every validation query finds its match at rank 1
    feat = np.eye(200)[data.identities]
    r = evaluate_reid(feat[q], feat[g], data.identities[q], data.identities[g], q_cams=data.cameras[q],
                      g_cams=data.cameras[g])
    assert r["rank1"] == 1.0 and r["mAP"] == 1.0 and r["n_queries_valid"] == 2


def test_market_draw_is_kept_where_it_leaves_a_gallery():
    """Two identities of three images (cameras 1, 1, 2): the Market draw takes one per identity and camera
    (4 images) and leaves one per identity in the gallery; the split function is seeded."""
    pids = np.array([1, 1, 1, 2, 2, 2])
    cams = np.array([1, 1, 2, 1, 1, 2])
    part = np.zeros(6, int)
    s = split_rows(pids, cams, part, seed=0)
    assert len(s["val"]) == 3  # round(0.1 x 2) -> at least one validation identity (3 images)
    assert len(s["val_query"]) == 2 and len(s["val_gallery"]) == 1
    assert cams[s["val_gallery"]][0] == 1  # the camera with two images keeps one in the gallery
    again = split_rows(pids, cams, part, seed=0)
    assert all(np.array_equal(s[k], again[k]) for k in s)


@pytest.mark.parametrize("n_ids", [1])
def test_a_single_identity_folder_still_reads(tmp_path, n_ids):
    cfg = reid_cfg(write_pairs_folder(tmp_path / "one", n_ids=n_ids))
    data = read_dataset(cfg)
    assert len(data.splits["val"]) == 0 and len(data.splits["val_query"]) == 0
