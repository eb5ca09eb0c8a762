"""Person re-identification retrieval metrics: CMC rank-k, mAP and mINP under the Market-1501 rule.

For each query the gallery is ranked by distance, after removing
  * gallery images of the query's identity taken by the query's camera (the same-camera rule), and
  * junk images (pid -1, also PARData's 'unknown identity');
an unknown camera (code < 0: a subset whose file names encode none) is never "the query's camera";
distractors (Market-1501's pid 0) stay in the ranking as negatives: no query carries their pid. A
query with no match left (a pid -1 query never has one) is excluded from the means and counted in
``n_queries_no_match``.

  * CMC rank-k: share of valid queries whose first match is among the first k ranks;
  * AP: mean over the query's matches of precision at the match's rank; mAP is its mean;
  * INP (Ye et al., TPAMI 2021): (#matches) / (rank of the last match), the share of the list an
    operator must inspect to find every match; mINP is its mean.

Everything is vectorised over a chunk of queries (no per-query Python loop, and no full sort: see
``_chunk_stats``), and distances are computed chunk by chunk, so a 3k x 20k evaluation needs
~0.3 GB and a few seconds. Ties between a match and a non-match rank the non-match first.
``rerank=True`` evaluates on the k-reciprocal re-ranked distances (tools.evaluation.rerank).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

JUNK = -1  # Market-1501 junk / unknown identity: ignored in the ranking
METRICS = ("cosine", "euclidean")
RANKS = (1, 5, 10)
CHUNK_ELEMENTS = 1 << 23  # query rows per chunk x gallery size; bounds the memory of one sort


def _as_tensor(x, dtype: torch.dtype, device: torch.device | str = "cpu") -> torch.Tensor:
    return torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x).to(dtype=dtype, device=device)


def _device_of(x) -> torch.device:
    """Work where the features / distances already are (a CUDA tensor is evaluated on its GPU)."""
    return x.device if torch.is_tensor(x) else torch.device("cpu")


def pairwise_distance(q: torch.Tensor, g: torch.Tensor, metric: str = "cosine") -> torch.Tensor:
    """(Q, D), (G, D) -> (Q, G) float32: ``cosine`` = 1 - cos, ``euclidean`` = squared L2 distance
    (torchreid's 'euclidean'; the square root would not change any ranking)."""
    if metric not in METRICS:
        raise ValueError(f"metric = {metric!r}; use one of {', '.join(METRICS)}")
    q, g = q.float(), g.float()
    if metric == "cosine":
        q = torch.nn.functional.normalize(q, dim=1)
        g = torch.nn.functional.normalize(g, dim=1)
        return 1.0 - q @ g.T
    sq = (q * q).sum(1, keepdim=True) + (g * g).sum(1)[None, :] - 2.0 * (q @ g.T)
    return sq.clamp_min_(0.0)


def _chunk_rows(n_gallery: int, chunk: int | None) -> int:
    return int(chunk) if chunk else max(1, CHUNK_ELEMENTS // max(n_gallery, 1))


def ignored_pairs(q_pids: torch.Tensor, q_cams: torch.Tensor, g_pids: torch.Tensor,
                  g_cams: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(same identity, ignored) masks (Q, G): same-camera matches and junk are ignored; an unknown
    camera (< 0) matches no camera, so multi-shot images without camera ids still count as matches."""
    same_id = g_pids[None, :] == q_pids[:, None]
    same_cam = (g_cams[None, :] == q_cams[:, None]) & (q_cams >= 0)[:, None]
    return same_id, (same_id & same_cam) | (g_pids == JUNK)[None, :]


def _chunk_stats(dist: torch.Tensor, q_pids: torch.Tensor, q_cams: torch.Tensor, g_pids: torch.Tensor,
                 g_cams: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Per query of one chunk: (#matches, 0-based rank of the first match, AP, INP).

    No full sort: only the ranks of the matches matter. With the query's match distances sorted
    (m_0 <= m_1 <= ...), a kept non-match of distance d comes before match i iff d <= m_i, i.e. iff
    fewer than i + 1 matches are strictly closer than d (one searchsorted); a histogram of those
    counts, cumulated, gives the non-matches before every match. Ties rank the non-match first
    (pessimistic: a collapsed embedding cannot score well)."""
    same_id, ignored = ignored_pairs(q_pids, q_cams, g_pids, g_cams)
    match = same_id & ~ignored
    n_rel = match.sum(1)
    n, m, dev = len(dist), int(n_rel.max()) if len(dist) else 0, dist.device
    if m == 0:
        zero = torch.zeros(n, dtype=torch.float64, device=dev)
        return n_rel, torch.full((n,), -1, dtype=torch.long, device=dev), zero, zero
    m_sorted = torch.topk(dist.masked_fill(~match, float("inf")), m, dim=1, largest=False, sorted=True).values
    closer = torch.searchsorted(m_sorted.contiguous(), dist.contiguous(), right=False)  # matches < d
    negative = (~match & ~ignored).long()
    hist = torch.zeros(n, m + 1, dtype=torch.long, device=dev).scatter_add_(1, closer, negative)
    i = torch.arange(m, device=dev)[None, :]
    rank = i + 1 + hist.cumsum(1)[:, :m]  # 1-based rank of the i-th match among the kept images
    hit = i < n_rel[:, None]  # rows are padded to the chunk's largest match count
    ap = torch.where(hit, (i + 1).double() / rank, 0.0).sum(1) / n_rel.clamp_min(1)
    last = torch.gather(rank, 1, (n_rel - 1).clamp_min(0)[:, None])[:, 0]
    return n_rel, rank[:, 0] - 1, ap, n_rel.double() / last


def _check_ids(name: str, pids, cams, n: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    p, c = _as_tensor(pids, torch.long, device).reshape(-1), _as_tensor(cams, torch.long, device).reshape(-1)
    if len(p) != n or len(c) != n:
        raise ValueError(f"{name}: {n} rows but {len(p)} pids and {len(c)} camera ids")
    return p, c


@dataclass
class QueryStats:
    """Per query: the numbers every metric is a mean of (what a bootstrap over queries resamples)."""

    n_matches: np.ndarray  # (Q,) int64 gallery matches left after the exclusions (0: no valid match)
    first: np.ndarray  # (Q,) int64 0-based rank of the first match, -1 without one
    ap: np.ndarray  # (Q,) float64 average precision (0 without a match)
    inp: np.ndarray  # (Q,) float64 inverse negative penalty (0 without a match)

    @property
    def valid(self) -> np.ndarray:
        return self.n_matches > 0

    def summary(self, ranks: Sequence[int] = RANKS) -> dict[str, float]:
        """rank<k> / mAP / mINP over the valid queries (fractions), n_queries_valid, n_queries_no_match."""
        valid = self.valid
        n = int(valid.sum())
        out: dict[str, float] = {}
        for k in ranks:
            out[f"rank{k}"] = float((self.first[valid] < k).mean()) if n else 0.0
        out["mAP"] = float(self.ap[valid].mean()) if n else 0.0
        out["mINP"] = float(self.inp[valid].mean()) if n else 0.0
        out["n_queries_valid"] = n
        out["n_queries_no_match"] = int(len(valid) - n)
        return out


def _stats(parts: list[tuple[torch.Tensor, ...]]) -> QueryStats:
    if not parts:
        parts = [(torch.zeros(0, dtype=torch.long),) * 2 + (torch.zeros(0, dtype=torch.float64),) * 2]
    n_rel, first, ap, inp = (torch.cat(x).cpu().numpy() for x in zip(*parts))
    first = np.where(n_rel > 0, first, -1)  # a query without a match has no first-match rank
    return QueryStats(n_rel.astype(np.int64), first.astype(np.int64), ap.astype(np.float64), inp.astype(np.float64))


def rank_stats(distmat, q_pids, g_pids, q_cams, g_cams, *, chunk: int | None = None) -> QueryStats:
    """Per-query statistics of a (Q, G) distance matrix (smaller = more similar), Market-1501 rule."""
    dist = _as_tensor(distmat, torch.float32, _device_of(distmat))
    if dist.dim() != 2:
        raise ValueError(f"distmat must be (Q, G), got shape {tuple(dist.shape)}")
    qp, qc = _check_ids("query", q_pids, q_cams, dist.shape[0], dist.device)
    gp, gc = _check_ids("gallery", g_pids, g_cams, dist.shape[1], dist.device)
    if not torch.isfinite(dist).all():  # +inf is how ignored images are pushed to the end
        raise ValueError("distmat holds NaN or inf (non-finite features?)")
    step = _chunk_rows(dist.shape[1], chunk)
    return _stats([_chunk_stats(dist[s:s + step], qp[s:s + step], qc[s:s + step], gp, gc)
                   for s in range(0, dist.shape[0], step)])


def rank_metrics(distmat, q_pids, g_pids, q_cams, g_cams, *, ranks: Sequence[int] = RANKS,
                 chunk: int | None = None) -> dict[str, float]:
    """CMC rank-k, mAP, mINP of a (Q, G) distance matrix (smaller = more similar), Market-1501 rule.

    Returns ``rank1``/``rank5``/``rank10`` (one key per ``ranks``), ``mAP``, ``mINP`` (fractions in
    [0, 1]), ``n_queries_valid`` and ``n_queries_no_match``."""
    return rank_stats(distmat, q_pids, g_pids, q_cams, g_cams, chunk=chunk).summary(ranks)


def _distance_chunks(q: torch.Tensor, g: torch.Tensor, metric: str, step: int) -> Iterator[tuple[int, torch.Tensor]]:
    for s in range(0, len(q), step):
        yield s, pairwise_distance(q[s:s + step], g, metric)


def reid_query_stats(q_feat, g_feat, q_pids, g_pids, *, q_cams, g_cams, metric: str = "cosine",
                     rerank: bool = False, k1: int = 20, k2: int = 6, lambda_value: float = 0.3,
                     chunk: int | None = None) -> QueryStats:
    """Features (Q, D) / (G, D) -> per-query :class:`QueryStats`. Without re-ranking the (Q, G)
    distance matrix is never held whole. ``rerank`` uses Zhong et al.'s k-reciprocal distance
    (k1, k2, lambda_value; features L2-normalised first when ``metric`` is cosine; computed on the
    CPU). CUDA features are evaluated on their GPU."""
    dev = _device_of(q_feat)
    q, g = _as_tensor(q_feat, torch.float32, dev), _as_tensor(g_feat, torch.float32, dev)
    if q.dim() != 2 or g.dim() != 2 or q.shape[1] != g.shape[1]:
        raise ValueError(f"features must be (Q, D) and (G, D), got {tuple(q.shape)} and {tuple(g.shape)}")
    if not (torch.isfinite(q).all() and torch.isfinite(g).all()):
        raise ValueError("query / gallery features hold NaN or inf")
    if metric not in METRICS:
        raise ValueError(f"metric = {metric!r}; use one of {', '.join(METRICS)}")
    if rerank:
        from tools.evaluation.rerank import k_reciprocal_distance

        if metric == "cosine":
            q, g = torch.nn.functional.normalize(q, dim=1), torch.nn.functional.normalize(g, dim=1)
        dist = k_reciprocal_distance(q, g, k1=k1, k2=k2, lambda_value=lambda_value)
        return rank_stats(dist, q_pids, g_pids, q_cams, g_cams, chunk=chunk)
    qp, qc = _check_ids("query", q_pids, q_cams, len(q), dev)
    gp, gc = _check_ids("gallery", g_pids, g_cams, len(g), dev)
    step = _chunk_rows(len(g), chunk)
    return _stats([_chunk_stats(d, qp[s:s + len(d)], qc[s:s + len(d)], gp, gc)
                   for s, d in _distance_chunks(q, g, metric, step)])


def evaluate_reid(q_feat, g_feat, q_pids, g_pids, *, q_cams, g_cams, metric: str = "cosine",
                  rerank: bool = False, k1: int = 20, k2: int = 6, lambda_value: float = 0.3,
                  ranks: Sequence[int] = RANKS, chunk: int | None = None) -> dict[str, float]:
    """Features -> the :func:`rank_metrics` dict (:func:`reid_query_stats` summarised)."""
    return reid_query_stats(q_feat, g_feat, q_pids, g_pids, q_cams=q_cams, g_cams=g_cams, metric=metric,
                            rerank=rerank, k1=k1, k2=k2, lambda_value=lambda_value, chunk=chunk).summary(ranks)


# ----------------------------------------------------------------------------- ranked-list picture
GREEN, RED, GREY = (40, 170, 40), (220, 40, 40), (128, 128, 128)  # RGB


def ranked_lists(dist_rows, q_pids, g_pids, q_cams, g_cams, *, topk: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """(n, G) distances of some queries -> (n, topk) gallery indices after the evaluation's exclusions
    (-1 pads a short list) and the (n, topk) bool 'same identity' flags."""
    d = _as_tensor(dist_rows, torch.float32).clone()
    qp, qc = _check_ids("query", q_pids, q_cams, d.shape[0])
    gp, gc = _check_ids("gallery", g_pids, g_cams, d.shape[1])
    same, ignored = ignored_pairs(qp, qc, gp, gc)
    d[ignored] = float("inf")
    k = min(topk, d.shape[1])
    val, idx = torch.sort(d, dim=1, stable=True)
    idx, val = idx[:, :k], val[:, :k]
    hit = torch.gather(same & ~ignored, 1, idx)
    idx = torch.where(torch.isinf(val), torch.full_like(idx, -1), idx)
    pad = topk - k  # a gallery smaller than topk
    idx = torch.nn.functional.pad(idx, (0, pad), value=-1)
    hit = torch.nn.functional.pad(hit & (idx[:, :k] >= 0), (0, pad), value=False)
    return idx.numpy(), hit.numpy()


def _thumb(path, size_hw: tuple[int, int], colour: tuple[int, int, int], border: int) -> np.ndarray:
    import cv2

    h, w = size_hw
    img = cv2.imread(str(path), cv2.IMREAD_COLOR) if path is not None else None
    img = np.full((h, w, 3), 200, np.uint8) if img is None else cv2.resize(img, (w, h))[:, :, ::-1]
    out = np.empty((h + 2 * border, w + 2 * border, 3), np.uint8)
    out[:] = colour
    out[border:border + h, border:border + w] = img
    return out


def save_ranked_lists(out_png: str | Path, query_paths: Sequence, gallery_paths: Sequence, dist_rows, *,
                      q_pids, g_pids, q_cams, g_cams, topk: int = 10, size_hw: tuple[int, int] = (128, 64),
                      border: int = 4) -> Path:
    """One row per query: the query (grey border), then its top-``topk`` gallery images after the
    evaluation's exclusions, green when the identity matches, red when not. Writes a PNG."""
    import cv2

    idx, hit = ranked_lists(dist_rows, q_pids, g_pids, q_cams, g_cams, topk=topk)
    gap = np.full((size_hw[0] + 2 * border, 12, 3), 255, np.uint8)
    rows = []
    for i, qpath in enumerate(query_paths):
        tiles = [_thumb(qpath, size_hw, GREY, border), gap]
        for j, h in zip(idx[i], hit[i]):
            tiles.append(_thumb(gallery_paths[j] if j >= 0 else None, size_hw, GREEN if h else RED, border))
            tiles.append(gap[:, :4])
        rows.append(np.concatenate(tiles, axis=1))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 6), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), np.concatenate(rows, axis=0)[:, :, ::-1]):
        raise OSError(f"could not write {out}")
    return out
