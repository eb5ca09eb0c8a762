import math

import numpy as np
import pytest

from tools.evaluation.metrics import compute_metrics, decode_exclusive


def test_label_metrics_against_hand_computed_values():
    # 4 samples, 3 attributes; attribute 2 has no positive label at all.
    labels = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 0]])
    probs = np.array([[0.9, 0.2, 0.1], [0.4, 0.8, 0.7], [0.6, 0.3, 0.2], [0.1, 0.1, 0.3]])
    m = compute_metrics(probs, labels, 0.5)
    pa = m["per_attr"]
    # attr 0: pred [1,0,1,0] vs gt [1,1,0,0] -> TP1 FN1 FP1 TN1
    assert pa["pos_recall"][0] == 0.5 and pa["neg_recall"][0] == 0.5
    # attr 1: pred [0,1,0,0] vs gt [0,1,1,0] -> TP1 FN1 TN2
    assert pa["pos_recall"][1] == 0.5 and pa["neg_recall"][1] == 1.0
    assert pa["prec"][1] == 1.0 and pa["f1"][1] == pytest.approx(2 / 3)
    # attr 2: no positives -> undefined positive recall, reported as NaN and left out of mA
    assert pa["n_pos"][2] == 0 and math.isnan(pa["pos_recall"][2]) and pa["neg_recall"][2] == 0.75
    assert m["ma"] == pytest.approx((0.5 + 0.75) / 2)
    assert m["n_attrs_evaluated"] == 2
    assert m["mean_pos_recall"] == pytest.approx(0.5)
    assert m["mean_neg_recall"] == pytest.approx((0.5 + 1.0 + 0.75) / 3)
    assert m["mean_acc"] == pytest.approx((0.5 + 0.75 + 0.75) / 3)
    # instance metrics per sample: pred sets {0},{1,2},{0},{} vs gt {0},{0,1},{1},{}
    acc = [1 / 1, 1 / 3, 0 / 2, 0.0]
    prec = [1.0, 1 / 2, 0.0, 0.0]
    rec = [1.0, 1 / 2, 0.0, 0.0]
    assert m["instance_acc"] == pytest.approx(np.mean(acc))
    assert m["instance_prec"] == pytest.approx(np.mean(prec))
    assert m["instance_recall"] == pytest.approx(np.mean(rec))
    p, r = np.mean(prec), np.mean(rec)
    assert m["instance_f1"] == pytest.approx(2 * p * r / (p + r))


def test_unknown_labels_are_ignored():
    labels = np.array([[1, -1], [0, 1], [-1, 0]])
    probs = np.array([[0.9, 0.9], [0.1, 0.9], [0.9, 0.1]])
    m = compute_metrics(probs, labels)
    assert m["per_attr"]["n_pos"].tolist() == [1, 1] and m["per_attr"]["n_neg"].tolist() == [1, 1]
    assert m["ma"] == 1.0 and m["mean_acc"] == 1.0


def test_threshold_is_used():
    labels = np.array([[1], [0]])
    probs = np.array([[0.6], [0.4]])
    assert compute_metrics(probs, labels, 0.5)["ma"] == 1.0
    assert compute_metrics(probs, labels, 0.7)["ma"] == 0.5


def test_exclusive_group_decoding_keeps_one_member():
    probs = np.array([[0.2, 0.3, 0.1, 0.9], [0.7, 0.6, 0.65, 0.2]])
    out = decode_exclusive(probs, [[0, 1, 2]])
    assert out[:, :3].tolist() == [[0, 1, 0], [1, 0, 0]]
    assert out[:, 3].tolist() == [0.9, 0.2]  # ungrouped attribute untouched


def test_rethinking_convention_counts_an_attribute_without_positives_as_recall_0():
    """Ours leaves such an attribute out of mA; Rethinking_of_PAR's counts its positive recall as 0."""
    labels = np.array([[1, 0], [0, 0], [1, 0], [0, 0]])
    probs = np.array([[0.9, 0.1], [0.2, 0.7], [0.4, 0.2], [0.1, 0.3]])
    m = compute_metrics(probs, labels)
    # attribute 0: R+ = 1/2, R- = 2/2 -> 0.75; attribute 1: no positive, R- = 3/4
    assert m["ma"] == pytest.approx(0.75) and m["n_attrs_evaluated"] == 1
    assert m["ma_rethinking"] == pytest.approx((0.75 + (0 + 0.75) / 2) / 2)


def test_per_attribute_thresholds():
    labels = np.array([[1, 1], [0, 0]])
    probs = np.array([[0.6, 0.6], [0.4, 0.4]])
    m = compute_metrics(probs, labels, np.array([0.5, 0.7]))
    np.testing.assert_allclose(m["per_attr"]["pos_recall"], [1.0, 0.0])
