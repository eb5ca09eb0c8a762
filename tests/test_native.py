"""NATIVE: the xlsx reader and the tube-grouped split."""
from collections import Counter

import numpy as np
import openpyxl
import torch
import pytest

from configs import load_config
from dataset.base import DataError
from dataset.native import read_label_sheet, tube_of, tube_split


def make_sheet(path, header, rows):
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(header)
    for r in rows:
        ws.append(r)
    wb.save(path)
    return path


def test_reader_blanks_and_stray_whitespace_are_zero(tmp_path, caplog):
    p = make_sheet(tmp_path / "s.xlsx", ["ID", "Hat", "Bag", "Quality"], [
        ["c1_v1_1_10", 1, None, "high"],
        ["c1_v1_1_11", " ", 1, "low"],
        ["c1_v1_2_5", None, "   ", "normal"],
        ["c2_v3_7_1", "1", 0, None],
    ])
    with caplog.at_level("WARNING"):
        ids, attrs, y, q = read_label_sheet(p)
    assert ids == ["c1_v1_1_10", "c1_v1_1_11", "c1_v1_2_5", "c2_v3_7_1"]
    assert attrs == ["Hat", "Bag"]
    assert y.tolist() == [[1, 0], [0, 1], [0, 0], [1, 0]]
    assert q == ["high", "low", "normal", ""]
    assert "2 label cell(s) held only whitespace" in caplog.text


def test_reader_rejects_odd_values_with_row_and_column(tmp_path):
    p = make_sheet(tmp_path / "s.xlsx", ["ID", "Hat"], [["a_1", 1], ["b_2", "x"]])
    with pytest.raises(DataError, match=r"row 3, column 'Hat' holds 'x'"):
        read_label_sheet(p)


def test_unknown_attribute_in_attrs_is_a_clear_error(tmp_path):
    p = make_sheet(tmp_path / "s.xlsx", ["ID", "Hat"], [["c1_v1_1_1", 1], ["c1_v1_2_1", 0]])
    (tmp_path / "img").mkdir()
    cfg = load_config(None, ["DATASET.NATIVE_EXCEL", str(p), "DATASET.IMAGE_PATH", str(tmp_path / "img"),
                             "DATASET.ATTRS", "['Hat', 'Scarf']"])
    from dataset import build_data

    with pytest.raises(DataError, match=r"DATASET.ATTRS names column\(s\) \['Scarf'\]"):
        build_data(cfg)


def test_tube_of():
    assert tube_of("c1_v4_4_142") == "c1_v4_4"
    assert tube_of("odd-name") == "odd-name"


def synthetic_ids(n_tubes=120, seed=0):
    rng = np.random.default_rng(seed)
    ids, rows = [], []
    for t in range(n_tubes):
        attrs = (rng.random(6) < [0.5, 0.3, 0.1, 0.05, 0.02, 0.0]).astype(np.uint8)
        for f in range(int(rng.integers(1, 4))):  # several boxes per tube
            ids.append(f"c{t % 3}_v{t % 7}_{t}_{f * 10}")
            rows.append(attrs)
    return ids, np.stack(rows)


def test_split_never_shares_a_tube_and_is_deterministic():
    ids, y = synthetic_ids()
    fr = {"train": 0.7, "val": 0.15, "test": 0.15}
    a = tube_split(ids, y, fr, seed=3)
    b = tube_split(ids, y, fr, seed=3)
    c = tube_split(ids, y, fr, seed=4)
    assert all(np.array_equal(a[s], b[s]) for s in fr)
    assert any(not np.array_equal(a[s], c[s]) for s in fr)
    tubes = {s: {tube_of(ids[i]) for i in a[s]} for s in fr}
    assert not tubes["train"] & tubes["val"] and not tubes["train"] & tubes["test"] and not tubes["val"] & tubes["test"]
    assert sorted(np.concatenate(list(a.values())).tolist()) == list(range(len(ids)))
    sizes = {s: len(a[s]) / len(ids) for s in fr}
    assert abs(sizes["train"] - 0.7) < 0.08 and abs(sizes["val"] - 0.15) < 0.06


def test_split_puts_rare_attributes_in_train():
    ids, y = synthetic_ids(seed=1)
    for seed in range(5):
        sp = tube_split(ids, y, {"train": 0.7, "val": 0.15, "test": 0.15}, seed)
        pos_tubes = Counter(tube_of(i) for i, row in zip(ids, y) if row[4])
        if len(pos_tubes) >= 2:
            assert y[sp["train"], 4].sum() > 0
        for j in range(y.shape[1]):
            n_tubes = len({tube_of(i) for i, row in zip(ids, y) if row[j]})
            if n_tubes >= 2:
                assert y[sp["train"], j].sum() > 0, (seed, j)


def test_real_native_split(native_data):
    from dataset import build_data

    cfg = load_config("configs/native.yaml", ["DATASET.NATIVE_EXCEL", str(native_data / "label/refined_Native_dataset.xlsx"),
                                              "DATASET.IMAGE_PATH", str(native_data / "main_data/filtered_refined_data")])
    d = build_data(cfg)
    assert len(d.image_paths) == 1785 and len(d.attr_names) == 37
    n = {s: len(d.splits[s]) for s in ("train", "val", "test")}
    assert sum(n.values()) == 1785 and 1150 < n["train"] < 1350
    tubes = {s: {tube_of(d.image_paths[i].stem) for i in d.splits[s]} for s in n}
    assert not (tubes["train"] & tubes["val"] or tubes["train"] & tubes["test"] or tubes["val"] & tubes["test"])
    train_pos = d.split_labels("train").sum(0)
    all_tubes = {}
    for i, p in enumerate(d.image_paths):
        for j in np.flatnonzero(d.labels[i] == 1):
            all_tubes.setdefault(j, set()).add(tube_of(p.stem))
    for j, t in all_tubes.items():
        if len(t) >= 2:
            assert train_pos[j] > 0, d.attr_names[j]
    assert np.allclose(d.label_priors("train"), (d.split_labels("train") == 1).mean(0))


def test_real_native_quality_levels_are_strata_for_per_quality_metrics(native_data):
    """NATIVE's Quality column becomes the ``quality`` stratum: every image has a level, the test split
    holds all three, and the per-level metrics are compute_metrics on exactly those images."""
    from dataset import build_data
    from tools.evaluation.evaluator import ContractScorer, SplitResult, stratified_metrics
    from tools.evaluation.metrics import compute_metrics
    from tools.inference.contract import InferenceContract

    cfg = load_config("configs/native.yaml", ["DATASET.NATIVE_EXCEL", str(native_data / "label/refined_Native_dataset.xlsx"),
                                              "DATASET.IMAGE_PATH", str(native_data / "main_data/filtered_refined_data")])
    d = build_data(cfg)
    q = d.strata["quality"]
    assert q.shape == (1785,) and set(q.tolist()) <= {"high", "normal", "low", "unknown"}
    rows = d.splits["test"]
    assert {"high", "normal", "low"} <= set(q[rows].tolist())
    rng = np.random.default_rng(0)
    probs = rng.random((len(rows), len(d.attr_names))).astype(np.float32)
    res = SplitResult({}, 0.0, probs, d.labels[rows], rows)
    contract = InferenceContract(d.attr_names, [], 1, 1, [0.5] * 3, [0.5] * 3, [0.5] * len(d.attr_names))
    strata = stratified_metrics(ContractScorer(contract, torch.device("cpu")), d, res)["quality"]
    low = q[rows] == "low"
    assert strata["low"]["n_samples"] == int(low.sum())
    assert strata["low"]["ma"] == compute_metrics(probs[low], d.labels[rows][low])["ma"]
    assert strata["low"]["n_attrs_evaluated"] <= len(d.attr_names)
