"""The balanced-test view of label-balanced learning (ICML 2024): per attribute, min(#pos, #neg) positives
and as many negatives, drawn at random with a fixed seed; that attribute's other labels are left out.

Positive and negative recall (hence mA) are unbiased under this subsampling, but accuracy, precision,
F1 and the instance metrics are those of a test set in which every attribute is balanced. Images with
no label left in the view are dropped (the original drops them too; it keeps the first min(#pos, #neg)
of each class in file order instead of drawing them).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from tools.evaluation.metrics import compute_metrics

BALANCED_KEYS = ("ma", "mean_acc", "mean_prec", "mean_f1", "instance_acc", "instance_prec", "instance_recall",
                 "instance_f1", "n_samples")


def balanced_mask(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """(N, A) bool: per attribute min(#pos, #neg) positives and negatives (labels < 0 are never chosen)."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    mask = np.zeros(labels.shape, dtype=bool)
    for j in range(labels.shape[1]):
        pos, neg = np.flatnonzero(labels[:, j] == 1), np.flatnonzero(labels[:, j] == 0)
        n = min(len(pos), len(neg))
        mask[rng.choice(pos, n, replace=False), j] = True
        mask[rng.choice(neg, n, replace=False), j] = True
    return mask


def balanced_view(probs: np.ndarray, labels: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(probs, labels) of the balanced view: labels outside it set to -1, images without any dropped."""
    mask = balanced_mask(labels, seed)
    keep = mask.any(1)
    return np.asarray(probs)[keep], np.where(mask, labels, -1)[keep]


def balanced_metrics(probs: np.ndarray, labels: np.ndarray, *, seed: int = 0, threshold: float | np.ndarray = 0.5,
                     score: Callable[[np.ndarray, np.ndarray], dict] | None = None) -> dict:
    """``compute_metrics`` on the balanced view; ``score`` (e.g. a ``ContractScorer.metrics``, which also
    decodes groups and thresholds per attribute) replaces it when given."""
    p, y = balanced_view(probs, labels, seed)
    return score(p, y) if score is not None else compute_metrics(p, y, threshold)
