"""Identity-balanced (PK) training batches for ReID: P identities x K images each.

Each epoch (seeded by ``(seed, epoch)``, so runs are reproducible and resumable) every identity's
images are shuffled and cut into groups of K; an identity with fewer than K images gets one group
drawn with replacement. Batches then take one group from each of P distinct identities chosen at
random among those with groups left, until fewer than P identities remain (torchreid's
RandomIdentitySampler scheme; an epoch sees about every image once).

Batches are lists of *dataset row indices*, exactly what ``dataset.loader.BatchLoader`` slices and
gathers. Under DDP rank r keeps slice r of every global batch (as the loader does): with P
divisible by the world size each rank holds P / world whole identities, so batch-hard mining on a
rank always finds positives, and a DDP step sees the single-process batch.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from dataset.base import DataError


def contiguous_ids(pids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Person ids -> (class labels 0..C-1 in sorted-pid order, the C distinct pids)."""
    uniq, labels = np.unique(np.asarray(pids, np.int64), return_inverse=True)
    return labels.astype(np.int64), uniq


def identity_lookup(identities: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, int]:
    """(N,) class label per dataset row (-1 outside ``rows``) and the class count, for the ID loss:
    the loader yields row indices, ``lookup[rows]`` are the classifier targets."""
    labels, uniq = contiguous_ids(np.asarray(identities)[rows])
    lookup = np.full(len(identities), -1, np.int64)
    lookup[rows] = labels
    return lookup, len(uniq)


class PKSampler:
    """``for rows in sampler`` -> this rank's (P // world) * K dataset rows of each batch."""

    def __init__(self, rows: np.ndarray, pids: np.ndarray, batch_size: int, k: int, *, seed: int = 0,
                 rank: int = 0, world: int = 1):
        self.rows = np.asarray(rows, np.int64)
        pids = np.asarray(pids, np.int64)
        if pids.shape != self.rows.shape:
            raise ValueError(f"one pid per row expected: {len(self.rows)} rows, {len(pids)} pids")
        if k < 1 or batch_size % k:
            raise DataError(f"TRAIN.BATCH_SIZE {batch_size} is not a multiple of REID.NUM_INSTANCE {k} "
                            "(images per identity); make it P x K")
        self.k, self.p = k, batch_size // k
        if self.p % world:
            raise DataError(f"{self.p} identities per batch (TRAIN.BATCH_SIZE / REID.NUM_INSTANCE) do not split "
                            f"over {world} DDP processes; use a multiple of {world} identities")
        order = np.argsort(pids, kind="stable")
        uniq, start = np.unique(pids[order], return_index=True)
        if len(uniq) < self.p:
            raise DataError(f"the training split has {len(uniq)} identities but a PK batch needs P = {self.p}; "
                            "lower TRAIN.BATCH_SIZE or raise REID.NUM_INSTANCE")
        self._groups = np.split(self.rows[order], start[1:])  # rows of each identity, pid order
        self.seed, self.rank, self.world = seed, rank, world
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def global_batches(self) -> list[np.ndarray]:
        """All P x K batches of this epoch (the same on every rank)."""
        rng = np.random.default_rng([self.seed, self.epoch])
        stacks: list[list[np.ndarray]] = []
        for rows in self._groups:
            if len(rows) < self.k:
                rows = rng.choice(rows, self.k, replace=True)
            else:
                rows = rng.permutation(rows)
            stacks.append([rows[j * self.k:(j + 1) * self.k] for j in range(len(rows) // self.k)])
        alive = list(range(len(stacks)))
        batches = []
        while len(alive) >= self.p:
            picked = rng.choice(len(alive), self.p, replace=False)
            batches.append(np.concatenate([stacks[alive[i]].pop() for i in picked]))
            alive = [a for a in alive if stacks[a]]
        return batches

    def batches(self) -> list[np.ndarray]:
        """This rank's slice of every global batch (whole identities, see the module note)."""
        per = self.p // self.world * self.k
        return [b[self.rank * per:(self.rank + 1) * per] for b in self.global_batches()]

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter(self.batches())

    def __len__(self) -> int:
        return len(self.global_batches())
