"""k-reciprocal re-ranking (Zhong, Zheng, Cao, Li: "Re-ranking Person Re-identification with
k-reciprocal Encoding", CVPR 2017), defaults k1 = 20, k2 = 6, lambda = 0.3.

On the N = Q + G probe-and-gallery set, with d(i, j) the squared Euclidean distance divided by the
largest distance of row i:
  1. N(i, k): the k + 1 nearest neighbours of i (i itself included);
     R(i, k) = {j in N(i, k) : i in N(j, k)}, the k-reciprocal neighbours;
  2. R*(i) = R(i, k1) plus R(c, round(k1 / 2)) of every c in R(i, k1) whose half-size set shares
     more than 2/3 of its members with R(i, k1);
  3. V_i[j] = exp(-d(i, j)) / sum over R*(i), zero outside R*(i); with k2 > 1 the local query
     expansion replaces V_i by the mean of V over the k2 nearest neighbours of i;
  4. Jaccard distance d_J(i, j) = 1 - sum_k min(V_ik, V_jk) / sum_k max(V_ik, V_jk)
     (= 1 - m / (2 - m) with m = sum_k min, since every V row sums to 1);
  5. final distance = (1 - lambda) d_J + lambda d.
Zhong et al.'s code holds N x N dense matrices; here V is sparse and the neighbour lists come from
chunked top-k, so memory stays O(N (k1 + Q)) and a 3k x 20k case fits in a few GB.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

ROWS_PER_CHUNK = 1024


def _neighbours(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, k) nearest-neighbour indices by squared distance (self first) and each row's max distance."""
    sq = (x * x).sum(1)
    ranks, row_max = [], []
    for s in range(0, len(x), ROWS_PER_CHUNK):
        d = (sq[s:s + ROWS_PER_CHUNK, None] + sq[None, :] - 2.0 * x[s:s + ROWS_PER_CHUNK] @ x.T).clamp_min_(0)
        rows = torch.arange(len(d), device=x.device)
        d[rows, rows + s] = 0.0  # round-off must not push i off its own list
        row_max.append(d.max(1).values)
        ranks.append(torch.topk(d, k, dim=1, largest=False, sorted=True).indices.cpu())
    return torch.cat(ranks), torch.cat(row_max).clamp_min_(1e-12)


def _reciprocal(nn: torch.Tensor, k: int) -> torch.Tensor:
    """Mask (N, k + 1): is nn[i, a] a k-reciprocal neighbour of i (i in its own k + 1 list)?"""
    fwd = nn[:, :k + 1]
    me = torch.arange(len(nn))[:, None, None]
    return (fwd[fwd] == me).any(-1)


def _expanded_sets(nn: torch.Tensor, k1: int) -> tuple[np.ndarray, np.ndarray]:
    """(row, col) pairs of R*(i) for every i (step 2), duplicates removed."""
    half = int(np.around(k1 / 2.0))
    r_mask, h_mask = _reciprocal(nn, k1), _reciprocal(nn, half)
    fwd, h_fwd = nn[:, :k1 + 1], nn[:, :half + 1]
    rows, cols = [], []
    for s in range(0, len(nn), ROWS_PER_CHUNK):
        f, m = fwd[s:s + ROWS_PER_CHUNK], r_mask[s:s + ROWS_PER_CHUNK]
        r_set = torch.where(m, f, torch.full_like(f, -1))  # R(i, k1), -1 = not a member
        cand, cand_m = h_fwd[f], h_mask[f]  # (c, k1 + 1, half + 1): R(candidate, half)
        shared = (cand[..., None] == r_set[:, None, None, :]).any(-1) & cand_m
        take = m & (shared.sum(-1) > 2.0 / 3.0 * cand_m.sum(-1))
        add = torch.where(take[..., None] & cand_m, cand, torch.full_like(cand, -1)).flatten(1)
        both = torch.cat([r_set, add], 1)
        row = torch.arange(s, s + len(f))[:, None].expand_as(both)
        keep = both >= 0
        rows.append(row[keep])
        cols.append(both[keep])
    key = np.unique(torch.cat(rows).numpy() * len(nn) + torch.cat(cols).numpy())
    return key // len(nn), key % len(nn)


def _encode(x: torch.Tensor, nn: torch.Tensor, row_max: torch.Tensor, k1: int, k2: int) -> sp.csr_matrix:
    """The sparse (N, N) V of steps 2-3."""
    n = len(x)
    rows, cols = _expanded_sets(nn, k1)
    d = np.empty(len(rows), np.float32)
    for s in range(0, len(rows), 1 << 15):  # pairwise distances of the kept pairs only
        r, c = torch.from_numpy(rows[s:s + (1 << 15)]), torch.from_numpy(cols[s:s + (1 << 15)])
        d[s:s + len(r)] = (((x[r] - x[c]) ** 2).sum(1) / row_max[r]).numpy()
    w = np.exp(-d)
    w /= np.bincount(rows, weights=w, minlength=n)[rows]
    v = sp.csr_matrix((w.astype(np.float32), (rows, cols)), shape=(n, n))
    if k2 > 1:  # local query expansion: mean of the k2 nearest neighbours' vectors
        qe_cols = nn[:, :k2].reshape(-1).numpy()
        qe_rows = np.repeat(np.arange(n), k2)
        a = sp.csr_matrix((np.full(len(qe_rows), 1.0 / k2, np.float32), (qe_rows, qe_cols)), shape=(n, n))
        v = (a @ v).tocsr()
    return v


def _jaccard_rows(v: sp.csr_matrix, n_query: int) -> np.ndarray:
    """(Q, N) Jaccard distances of the first ``n_query`` rows of V to every row (step 4)."""
    vc = v.tocsc()
    out = np.empty((n_query, v.shape[0]), np.float32)
    for i in range(n_query):
        lo, hi = v.indptr[i], v.indptr[i + 1]
        ks, vi = v.indices[lo:hi], v.data[lo:hi]
        sub = vc[:, ks]  # the rows j sharing a non-zero column k with i, column by column
        counts = np.diff(sub.indptr)
        mins = np.minimum(sub.data, np.repeat(vi, counts))
        m = np.bincount(sub.indices, weights=mins, minlength=v.shape[0])
        out[i] = 1.0 - m / (2.0 - m)
    return out


def k_reciprocal_distance(q_feat, g_feat, *, k1: int = 20, k2: int = 6, lambda_value: float = 0.3) -> np.ndarray:
    """(Q, D), (G, D) features -> (Q, G) re-ranked distances (float32 numpy). Features are used as
    given: L2-normalise them first for a cosine-trained embedding (fast-reid does). The N x N
    neighbour search runs where the features are (a GPU if CUDA tensors), the sparse steps on the CPU."""
    dev = q_feat.device if torch.is_tensor(q_feat) else torch.device("cpu")
    q = torch.as_tensor(np.asarray(q_feat) if not torch.is_tensor(q_feat) else q_feat).float().to(dev)
    g = torch.as_tensor(np.asarray(g_feat) if not torch.is_tensor(g_feat) else g_feat).float().to(dev)
    n_q, n = len(q), len(q) + len(g)
    if k1 < 1 or not 1 <= k2 <= k1 + 1:
        raise ValueError(f"re-ranking needs k1 >= 1 and 1 <= k2 <= k1 + 1, got k1={k1}, k2={k2}")
    if n < k1 + 1:
        raise ValueError(f"re-ranking with k1={k1} needs at least {k1 + 1} query + gallery images, got {n}")
    if not 0.0 <= lambda_value <= 1.0:
        raise ValueError(f"lambda_value must be in [0, 1], got {lambda_value}")
    x = torch.cat([q, g])
    nn, row_max = _neighbours(x, k1 + 1)
    sq = (x * x).sum(1)
    orig = ((sq[:n_q, None] + sq[None, n_q:] - 2.0 * q @ g.T).clamp_min_(0) / row_max[:n_q, None]).cpu().numpy()
    row_max = row_max.cpu()
    v = _encode(x.cpu(), nn, row_max, k1, k2)
    jac = _jaccard_rows(v, n_q)[:, n_q:]
    return (1.0 - lambda_value) * jac + lambda_value * orig
