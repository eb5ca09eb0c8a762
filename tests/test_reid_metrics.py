"""ReID metrics against hand-computed rankings (Market-1501 rule), a plain per-query reference,
k-reciprocal re-ranking against a dense loop transcription of Zhong et al., and the ranked-list picture."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tools.evaluation.reid import evaluate_reid, rank_metrics, rank_stats, ranked_lists, save_ranked_lists
from tools.evaluation.rerank import k_reciprocal_distance

# Gallery of 7: pid -1 = junk, 0 = distractor.
G_PIDS = np.array([1, -1, 2, 1, 0, 1, 3])
G_CAMS = np.array([1, 1, 2, 2, 3, 3, 1])


def hand_case():
    q_pids, q_cams = np.array([1, 2, 3, 1]), np.array([1, 1, 1, 2])
    dist = np.array([
        # A (pid 1, cam 1): g0 same id+cam and g1 junk leave -> g2 -, g3 +, g4 - (distractor), g5 +, g6 -
        [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7],
        # B (pid 2, cam 1): junk g1 is nearest but ignored -> g2 + first
        [0.5, 0.1, 0.2, 0.3, 0.4, 0.6, 0.7],
        # C (pid 3, cam 1): its only gallery image g6 is from its own camera -> no valid match
        [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.05],
        # D (pid 1, cam 2): g3 (same cam) and g1 (junk) leave -> g6 -, g5 +, g4 -, g2 -, g0 +
        [0.9, 0.0, 0.8, 0.05, 0.7, 0.6, 0.1],
    ])
    return dist, q_pids, q_cams


def test_hand_computed_rankings():
    dist, qp, qc = hand_case()
    r = rank_metrics(dist, qp, G_PIDS, qc, G_CAMS)
    # A: matches at ranks 2, 4 -> AP (1/2 + 2/4) / 2 = 0.5, INP 2/4; B: rank 1 -> AP 1, INP 1;
    # D: matches at ranks 2, 5 -> AP (1/2 + 2/5) / 2 = 0.45, INP 2/5; C excluded.
    assert r["n_queries_valid"] == 3 and r["n_queries_no_match"] == 1
    assert r["rank1"] == pytest.approx(1 / 3)
    assert r["rank5"] == pytest.approx(1.0) and r["rank10"] == pytest.approx(1.0)
    assert r["mAP"] == pytest.approx((0.5 + 1.0 + 0.45) / 3)
    assert r["mINP"] == pytest.approx((0.5 + 1.0 + 0.4) / 3)


def test_per_query_stats_of_the_hand_case():
    """What a bootstrap over queries resamples: per query its match count, first-match rank, AP, INP."""
    dist, qp, qc = hand_case()
    st = rank_stats(dist, qp, G_PIDS, qc, G_CAMS)
    assert st.n_matches.tolist() == [2, 1, 0, 2]  # C: its only image is from its own camera
    assert st.first.tolist() == [1, 0, -1, 1]  # 0-based: A and D first match at rank 2
    assert st.ap == pytest.approx([0.5, 1.0, 0.0, 0.45]) and st.inp == pytest.approx([0.5, 1.0, 0.0, 0.4])
    assert st.summary() == rank_metrics(dist, qp, G_PIDS, qc, G_CAMS)


def test_rank_k_cut_and_chunking():
    # one query, its only valid match at rank 7 (six distractors before it)
    g_pids, g_cams = np.array([0, 0, 0, 0, 0, 0, 5, 0]), np.ones(8, int) * 2
    dist = np.arange(8, dtype=float)[None]
    r = rank_metrics(dist, [5], g_pids, [1], g_cams, ranks=(1, 5, 6, 7, 10))
    assert (r["rank1"], r["rank5"], r["rank6"], r["rank7"], r["rank10"]) == (0, 0, 0, 1, 1)
    assert r["mAP"] == pytest.approx(1 / 7) and r["mINP"] == pytest.approx(1 / 7)
    dist, qp, qc = hand_case()
    assert rank_metrics(dist, qp, G_PIDS, qc, G_CAMS, chunk=1) == rank_metrics(dist, qp, G_PIDS, qc, G_CAMS)


def test_ties_rank_the_non_match_first():
    # a collapsed embedding (every distance equal) must not look perfect: the match ranks after the
    # three non-matches -> AP 1/4, no rank-1 hit
    r = rank_metrics(np.zeros((1, 4)), [2], [1, 2, 3, 0], [1], [2, 2, 2, 2])
    assert r["rank1"] == 0.0 and r["rank5"] == 1.0 and r["mAP"] == pytest.approx(0.25)


def test_no_valid_query_at_all():
    r = rank_metrics(np.zeros((1, 2)), [7], [7, -1], [1], [1, 2])
    assert r["n_queries_valid"] == 0 and r["n_queries_no_match"] == 1 and r["mAP"] == 0.0


def test_unknown_camera_is_never_the_query_camera():
    # multi-shot subsets without camera ids (code -1): a same-identity gallery image is a match.
    # gallery by distance: pid 4 (cam -1), pid 9, pid 4 (cam -1) -> matches at ranks 1 and 3
    r = rank_metrics(np.array([[0.1, 0.2, 0.3]]), [4], [4, 9, 4], [-1], [-1, -1, -1])
    assert r["rank1"] == 1.0 and r["mAP"] == pytest.approx((1 + 2 / 3) / 2) and r["mINP"] == pytest.approx(2 / 3)
    # a known camera still excludes its own images; an unknown gallery camera differs from camera 2
    r = rank_metrics(np.array([[0.1, 0.2, 0.3]]), [4], [4, 9, 4], [2], [2, 9, -1])
    assert r["rank1"] == 0.0 and r["mAP"] == pytest.approx(0.5)


def reference(dist, qp, gp, qc, gc):
    """Per query, in plain Python: the definitions of the module docstring."""
    aps, inps, firsts = [], [], []
    for i in range(len(qp)):
        kept = [j for j in np.argsort(dist[i], kind="stable")
                if gp[j] != -1 and not (gp[j] == qp[i] and gc[j] == qc[i] >= 0)]
        hits = [r for r, j in enumerate(kept, 1) if gp[j] == qp[i]]
        if not hits:
            continue
        aps.append(np.mean([n / r for n, r in enumerate(hits, 1)]))
        inps.append(len(hits) / hits[-1])
        firsts.append(hits[0])
    return np.mean(aps), np.mean(inps), np.mean(np.asarray(firsts) <= 5), len(aps)


def test_features_match_plain_reference():
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((12, 16))
    qp, gp = rng.integers(1, 12, 40), rng.integers(-1, 12, 300)
    qf = centers[qp] + 0.9 * rng.standard_normal((40, 16))
    gf = centers[np.maximum(gp, 0)] + 0.9 * rng.standard_normal((300, 16))
    qc, gc = rng.integers(-1, 4, 40), rng.integers(-1, 4, 300)
    for metric in ("cosine", "euclidean"):
        r = evaluate_reid(qf, gf, qp, gp, q_cams=qc, g_cams=gc, metric=metric, chunk=7)
        if metric == "cosine":
            qn, gn = qf / np.linalg.norm(qf, axis=1, keepdims=True), gf / np.linalg.norm(gf, axis=1, keepdims=True)
            dist = 1 - qn @ gn.T
        else:
            dist = ((qf[:, None] - gf[None]) ** 2).sum(-1)
        m_ap, m_inp, r5, n = reference(dist, qp, gp, qc, gc)
        assert r["n_queries_valid"] == n
        assert r["mAP"] == pytest.approx(m_ap, abs=1e-6) and r["mINP"] == pytest.approx(m_inp, abs=1e-6)
        assert r["rank5"] == pytest.approx(r5)
        assert 0.0 < r["mAP"] < 1.0


# ----------------------------------------------------------------------------- re-ranking
def naive_rerank(q, g, k1, k2, lam):
    """Zhong et al.'s steps on dense matrices, one loop per sample (the definitions, not the code under test)."""
    x = np.concatenate([q, g]).astype(np.float64)
    n, nq = len(x), len(q)
    d = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    d = d / d.max(1, keepdims=True)
    order = np.argsort(d, axis=1, kind="stable")

    def recip(i, k):
        return [j for j in order[i, :k + 1] if i in order[j, :k + 1]]

    v = np.zeros((n, n))
    for i in range(n):
        r = recip(i, k1)
        grown = set(r)
        for c in r:
            rc = recip(c, int(np.around(k1 / 2)))
            if len(set(rc) & set(r)) > 2 / 3 * len(rc):
                grown |= set(rc)
        idx = sorted(grown)
        v[i, idx] = np.exp(-d[i, idx]) / np.exp(-d[i, idx]).sum()
    if k2 > 1:
        v = np.stack([v[order[i, :k2]].mean(0) for i in range(n)])
    jac = np.array([[1 - np.minimum(v[i], v[j]).sum() / np.maximum(v[i], v[j]).sum() for j in range(n)]
                    for i in range(nq)])
    return ((1 - lam) * jac + lam * d[:nq])[:, nq:]


@pytest.mark.parametrize("k1,k2", [(5, 3), (4, 1), (20, 6)])
def test_rerank_matches_dense_definition(k1, k2):
    rng = np.random.default_rng(k1)
    q, g = rng.standard_normal((5, 4)), rng.standard_normal((30, 4))
    np.testing.assert_allclose(k_reciprocal_distance(q, g, k1=k1, k2=k2, lambda_value=0.3),
                               naive_rerank(q, g, k1, k2, 0.3), atol=1e-5)


def test_rerank_toy_promotes_the_reciprocal_neighbour():
    # The query's nearest image g3 belongs to a tight clump (g3..g6) that does not have the query among
    # its 3 nearest; g0 (same identity) does: R(q, 3) = {q, g0}, so re-ranking puts g0 first.
    q = np.array([[0.0, 0.0]])
    g = np.array([[0.9, 0.0], [1.2, 0.5], [1.2, -0.5], [-0.8, 0.0], [-1.0, 0.1], [-1.0, -0.1], [-1.1, 0.0]])
    gp, gc = np.array([1, 1, 1, 2, 2, 2, 2]), np.full(7, 2)
    assert evaluate_reid(q, g, [1], gp, q_cams=[1], g_cams=gc, metric="euclidean")["rank1"] == 0.0
    d = k_reciprocal_distance(q, g, k1=3, k2=1, lambda_value=0.3)
    assert np.argmin(d[0]) == 0
    r = evaluate_reid(q, g, [1], gp, q_cams=[1], g_cams=gc, metric="euclidean", rerank=True,
                      k1=3, k2=1)
    assert r["rank1"] == 1.0
    # lambda = 1 is the original distance: the original ranking comes back
    d1 = k_reciprocal_distance(q, g, k1=3, k2=1, lambda_value=1.0)
    assert list(np.argsort(d1[0])) == list(np.argsort(((g - q) ** 2).sum(1)))


def test_rerank_refuses_too_small_sets():
    with pytest.raises(ValueError, match="at least 21"):
        k_reciprocal_distance(np.zeros((2, 3)), np.ones((4, 3)))


# ----------------------------------------------------------------------------- picture
def test_ranked_list_picture(tmp_path):
    dist, qp, qc = hand_case()
    idx, hit = ranked_lists(dist, qp, G_PIDS, qc, G_CAMS, topk=10)
    assert list(idx[0][:5]) == [2, 3, 4, 5, 6] and list(idx[0][5:]) == [-1] * 5  # exclusions left out, padded
    assert list(hit[0][:5]) == [False, True, False, True, False]
    paths = []
    for i in range(7):
        p = tmp_path / f"g{i}.jpg"
        Image.fromarray(np.full((16, 8, 3), 30 * i, np.uint8)).save(p)
        paths.append(p)
    out = save_ranked_lists(tmp_path / "vis" / "ranked.png", paths[:2], paths, dist[:2], q_pids=qp[:2],
                            g_pids=G_PIDS, q_cams=qc[:2], g_cams=G_CAMS, topk=3, size_hw=(32, 16))
    img = np.asarray(Image.open(out).convert("RGB"))
    assert img.shape[0] == 2 * (32 + 8 + 6)
    tile = 16 + 8
    first_of_a = img[1, tile + 12 + 1]  # border pixel of query A's rank-1 image (g2: wrong -> red)
    first_of_b = img[46 + 1, tile + 12 + 1]  # query B's rank-1 image (g2: right -> green)
    assert first_of_a[0] > 150 > first_of_a[1] and first_of_b[1] > 150 > first_of_b[0]
