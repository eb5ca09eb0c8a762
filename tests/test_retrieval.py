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
                   [1, 0, -1],  # img4: x unknown -> no query; left out only of the queries with g=a
                   [1, 1, 0]], np.float32)  # img5: two members of an exclusive group (groups: g undefined)
PROBS = np.array([[0.8, 0.2, 0.9], [0.45, 0.55, 0.5], [0.3, 0.7, 0.4], [0.9, 0.1, 0.3],
                  [0.9, 0.1, 0.9], [0.5, 0.5, 0.5]], np.float32)


def test_hand_computed_map_and_rank_k():
    """protocol groups: g is exclusive (scored as its member's share of the group); undefined terms per image.
    query (a, x):     img4 (x unknown, g matches) left out; img5 (g undefined, x=0 contradicts) ranked.
                      scores .72 .225 .12 .27 | .25 (img5) -> 0 3 5 1 2, relevant 0, 2 at ranks 1, 5: AP (1 + 2/5) / 2
    query (a, not x): img4 and img5 left out; scores .08 .225 .18 .63 -> 3 first: AP 1
    query (b, not x): img4 (g=a contradicts) ranked at .01, img5 left out; .02 .275 .42 .07 .01 -> 2 1 3 0 4,
                      relevant 1 at rank 2: AP 1/2, rank-1 miss"""
    m = retrieval_metrics(PROBS, LABELS, NAMES, GROUPS, protocol="groups")
    assert m["retrieval_queries"] == 3 and m["retrieval_gallery"] == 6
    assert m["retrieval_mAP"] == pytest.approx((0.7 + 1.0 + 0.5) / 3)
    assert m["retrieval_rank1"] == pytest.approx(2 / 3) and m["retrieval_rank5"] == 1.0 and m["retrieval_rank10"] == 1.0
    assert m["retrieval_images_with_unknown"] == 2 and m["retrieval_ill_defined"] == 1
    assert m["retrieval_excluded_mean"] == pytest.approx((1 + 2 + 1) / 3)
    assert "mAP" not in m and "rank1" not in m  # distinct from ReID's mAP / rank1
    # the same with AttrGroup objects, and scale-free group probabilities (normalised within the group)
    scaled = PROBS.copy()
    scaled[:, :2] *= 0.5
    assert retrieval_metrics(scaled, LABELS, NAMES, [AttrGroup("g", "exclusive", ("a", "b"))], protocol="groups") == m


def test_upar_protocol_scores_every_attribute_as_binary_and_handles_unknowns_per_term():
    """UPAR: a, b, x are three binary terms, so img5 (a and b on, as two colours may be) is a valid query.
    (1,0,1): pa(1-pb)px: .576 .10125 .036 .243 | img4 left out | img5 .125 -> 0 3 5 1 2: AP (1 + 2/5) / 2
    (0,1,0): .004 .15125 .294 .007 | img4 (a on contradicts) .001 | img5 .125 -> 2 1 ...: AP 1/2, rank-1 miss
    (1,0,0): .064 .10125 .054 .567 | img4 left out | img5 .125 -> 3 first: AP 1
    (1,1,0): .016 .12375 .126 .063 | img4 .009 | img5 .125 -> 2 5 ...: AP 1/2, rank-1 miss"""
    m = retrieval_metrics(PROBS, LABELS, NAMES, GROUPS)  # protocol upar is the default
    assert m["retrieval_queries"] == 4 and m["retrieval_gallery"] == 6
    assert m["retrieval_mAP"] == pytest.approx((0.7 + 0.5 + 1.0 + 0.5) / 4)
    assert m["retrieval_rank1"] == pytest.approx(0.5) and m["retrieval_rank5"] == 1.0
    assert m["retrieval_images_with_unknown"] == 1 and m["retrieval_ill_defined"] == 0
    assert m["retrieval_excluded_mean"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="not one of upar, groups"):
        retrieval_metrics(PROBS, LABELS, NAMES, GROUPS, protocol="exact")


def test_attribute_subset():
    # over x alone img4 (x unknown) is left out of both queries; img5 counts (g is not asked)
    # x=1:     scores .9 .5 .4 .3 .5 -> order 0 1 5 2 3 (ties in gallery order), relevant 0, 2 at ranks 1, 4
    # not x:   scores .1 .5 .6 .7 .5 -> order 3 2 1 5 0, relevant 3, 1, 5 at ranks 1, 3, 4
    m = retrieval_metrics(PROBS, LABELS, NAMES, GROUPS, subset=["x"])
    assert m["retrieval_queries"] == 2 and m["retrieval_gallery"] == 6 and m["retrieval_excluded_mean"] == 1.0
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
    m = retrieval_metrics(labels * 0.98 + 0.01, labels, names, groups, protocol="groups")
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


def test_the_command_prints_what_it_left_out():
    from scripts.retrieval_eval import exclusion_line

    m = retrieval_metrics(PROBS, LABELS, NAMES, GROUPS, protocol="groups")
    line = exclusion_line(m, "groups")
    assert "2 image(s) with an undefined term" in line and "1 with an exclusive group" in line
    assert "(1.3 images per query on average)" in line
    assert "exclusive group" not in exclusion_line(retrieval_metrics(PROBS, LABELS, NAMES, GROUPS), "upar")
