"""Nearest appearance embeddings with FAISS (inner product of unit vectors = cosine).

Up to ``EXACT_UP_TO`` vectors: an exact flat index. Beyond: an inverted-file index (IVF-Flat, about
sqrt(N) lists, ``NPROBE`` of them searched per query), trained (k-means, 10 iterations, 40 points per
list) on a sample of the vectors, so a query over a million 512-d tracks compares with about 16k of
them. Filters (camera, time, duration) are FAISS ID selectors over the allowed track ids.
"""
from __future__ import annotations

import math

import numpy as np

EXACT_UP_TO = 50_000
NPROBE = 16
TRAIN_PER_LIST = 40


class VectorIndex:
    """Unit float32 vectors keyed by track id."""

    def __init__(self, dim: int):
        self.dim, self.index, self.count = dim, None, 0

    def build(self, ids: np.ndarray, vectors: np.ndarray) -> "VectorIndex":
        import faiss

        x = np.ascontiguousarray(vectors, np.float32)
        n = len(x)
        if n <= EXACT_UP_TO:
            self.index = faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))
        else:
            nlist = min(4096, int(math.sqrt(n)))
            quantizer = faiss.IndexFlatIP(self.dim)
            self.index = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
            self.index.cp.niter = 10
            rng = np.random.default_rng(0)
            sample = x[rng.choice(n, min(n, nlist * TRAIN_PER_LIST), replace=False)]
            self.index.train(sample)
            self.index.nprobe = NPROBE
        self.add(ids, x)
        return self

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids):
            self.index.add_with_ids(np.ascontiguousarray(vectors, np.float32), np.asarray(ids, np.int64))
            self.count += len(ids)

    def search(self, query: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(track ids, cosine) of the ``k`` nearest to ``query`` among ``allowed`` ids (None = all)."""
        import faiss

        if self.index is None or self.count == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        q = np.ascontiguousarray(np.asarray(query, np.float32).reshape(1, -1))
        q /= max(float(np.linalg.norm(q)), 1e-12)
        params = None
        if allowed is not None:
            sel = faiss.IDSelectorBatch(np.ascontiguousarray(allowed, np.int64))
            params = (faiss.SearchParametersIVF(sel=sel, nprobe=NPROBE) if isinstance(self.index, faiss.IndexIVF)
                      else faiss.SearchParameters(sel=sel))
        sims, ids = self.index.search(q, int(min(k, self.count)), params=params)
        keep = ids[0] >= 0
        return ids[0][keep], sims[0][keep]
