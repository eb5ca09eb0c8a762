"""Attribute-combination retrieval (UPAR task 2): mAP and rank-k against a case computed by hand."""
from __future__ import annotations

import numpy as np
import pytest

from dataset.base import AttrGroup
from tools.evaluation.retrieval import Term, average_precision, joint_probability, retrieval_metrics

NAMES = ["a", "b", "x"]
GROUPS = [["g", "exclusive", "a", "b"]]
LABELS = np.array([[1, 0, 1],   # img0: g=a, x
                   [0, 1, 0],   # img1: g=b, not x
                   [1, 0, 1],   # img2: g=a, x
                   [1, 0, 0],   # img3: g=a, not x
                   [1, 0, -1],  # img4: x unknown -> out of queries and gallery
                   [1, 1, 0]], np.float32)  # img5: two members of an exclusive group -> out
PROBS = np.array([[0.8, 0.2, 0.9], [0.45, 0.55, 0.5], [0.3, 0.7, 0.4], [0.9, 0.1, 0.3],
                  [0.9, 0.1, 0.9], [0.5, 0.5, 0.5]], np.float32)


def test_hand_computed_map_and_rank_k():
    # query (a, x):     scores .72 .225 .12 .27 -> order 0 3 1 2, relevant 0, 2 at ranks 1, 4: AP (1 + 2/4) / 2
    # query (a, not x): scores .08 .225 .18 .63 -> 3 first, relevant 3:                        AP 1
    # query (b, not x): scores .02 .275 .42 .07 -> 2 1 3 0, relevant 1 at rank 2:               AP 1/2, rank-1 miss
    m = retrieval_metrics(PROBS, LABELS, NAMES, GROUPS)
    assert m["retrieval_queries"] == 3 and m["retrieval_gallery"] == 4
    assert m["retrieval_mAP"] == pytest.approx((0.75 + 1.0 + 0.5) / 3)
    assert m["retrieval_rank1"] == pytest.approx(2 / 3) and m["retrieval_rank5"] == 1.0 and m["retrieval_rank10"] == 1.0
    assert set(m) == {"retrieval_mAP", "retrieval_rank1", "retrieval_rank5", "retrieval_rank10", "retrieval_queries",
                      "retrieval_gallery"}  # distinct from ReID's mAP / rank1
    # the same with AttrGroup objects, and scale-free group probabilities (normalised within the group)
    scaled = PROBS.copy()
    scaled[:, :2] *= 0.5
    assert retrieval_metrics(scaled, LABELS, NAMES, [AttrGroup("g", "exclusive", ("a", "b"))]) == m


def test_attribute_subset():
    # over x alone the gallery is img0, 1, 2, 3, 5 (img4's x is unknown; img5 counts: g is not asked)
    # x=1:     scores .9 .5 .4 .3 .5 -> order 0 1 5 2 3 (ties in gallery order), relevant 0, 2 at ranks 1, 4
    # not x:   scores .1 .5 .6 .7 .5 -> order 3 2 1 5 0, relevant 3, 1, 5 at ranks 1, 3, 4
    m = retrieval_metrics(PROBS, LABELS, NAMES, GROUPS, subset=["x"])
    assert m["retrieval_queries"] == 2 and m["retrieval_gallery"] == 5
    assert m["retrieval_mAP"] == pytest.approx(((1 + 2 / 4) / 2 + (1 + 2 / 3 + 3 / 4) / 3) / 2)
    assert m["retrieval_rank1"] == 1.0
    with pytest.raises(ValueError, match="neither a group"):
        retrieval_metrics(PROBS, LABELS, NAMES, GROUPS, subset=["nope"])
    with pytest.raises(ValueError, match=r"must both be \(N, 3\)"):
        retrieval_metrics(PROBS[:, :2], LABELS, NAMES, GROUPS)


def test_optional_group_none_and_perfect_scores():
    names = ["Glasses", "Sunglasses", "Hat"]
    groups = [["eyewear", "optional", "Glasses", "Sunglasses"]]
    labels = np.array([[1, 0, 0], [0, 1, 1], [0, 0, 0], [0, 0, 1]], np.float32)
    m = retrieval_metrics(labels * 0.98 + 0.01, labels, names, groups)
    assert m["retrieval_queries"] == 4 and m["retrieval_mAP"] == 1.0 and m["retrieval_rank1"] == 1.0
    p = np.array([[0.2, 0.5, 0.9]])
    none = joint_probability(p, [Term("none", group=(0, 1))])
    assert none[0] == pytest.approx(0.8 * 0.5)
    assert joint_probability(p, [Term("member", 1, (0, 1)), Term("attr", 2, negate=True)])[0] == pytest.approx(0.05)
    assert joint_probability(p, [Term("member", 1, (0, 1), exclusive=True)])[0] == pytest.approx(0.5 / 0.7)


def test_average_precision_by_hand():
    ap, rel = average_precision(np.array([0.9, 0.8, 0.7, 0.6]), np.array([False, True, False, True]))
    assert ap == pytest.approx((1 / 2 + 2 / 4) / 2) and rel.tolist() == [False, True, False, True]
    assert average_precision(np.array([0.1, 0.2]), np.array([False, False]))[0] == 0.0
