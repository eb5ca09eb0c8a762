"""PAR metrics: label-based (per attribute, mA) and instance-based, as in Rethinking_of_PAR.

Labels < 0 (not annotated) are ignored everywhere. An attribute with no positive (or no
negative) label in the evaluated split has an undefined positive (negative) recall: it is
reported as NaN and left out of the means (``ma``; ``n_attrs_evaluated`` says how many count).
Rethinking_of_PAR instead counts such a recall as 0 over every attribute; that convention is
reported beside ours as ``ma_rethinking`` so published numbers can be compared.

The decision rule (``predicted_positive``) is Rethinking_of_PAR's ``pred_label = preds_probs > threshold``:
an attribute is predicted present when its probability is strictly above its threshold; a
probability of exactly the threshold counts as absent. Label decoding (``tools.inference.labels``)
and the bootstrap (``scripts.summarize``) use the same function.
"""
from __future__ import annotations

import numpy as np

EPS = 1e-20  # Rethinking_of_PAR's epsilon for the instance metrics (empty union -> 0)
SUMMARY_KEYS = ("mean_acc", "ma", "ma_rethinking", "n_attrs_evaluated", "mean_pos_recall", "mean_neg_recall",
                "mean_f1", "instance_acc", "instance_prec", "instance_recall", "instance_f1")


def predicted_positive(probs: np.ndarray, threshold: float | np.ndarray) -> np.ndarray:
    """The one decision rule: ``probs > threshold`` (strictly, as Rethinking_of_PAR); broadcasts."""
    return np.asarray(probs) > np.asarray(threshold)


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0, a / np.maximum(b, 1), np.nan)


def decode_exclusive(probs: np.ndarray, group_indices: list[list[int]]) -> np.ndarray:
    """Arg-max decoding of exclusive groups: the top member becomes 1, the others 0."""
    out = probs.copy()
    for idx in group_indices:
        sub = out[:, idx]
        top = sub.argmax(1)
        out[:, idx] = 0.0
        out[np.arange(len(out)), np.asarray(idx)[top]] = 1.0
    return out


def compute_metrics(probs: np.ndarray, labels: np.ndarray, threshold: float | np.ndarray = 0.5) -> dict:
    """``probs``/``labels``: (N, A); ``threshold``: one, or one per attribute (positive when
    ``probs > threshold``). Returns per-attribute arrays under ``per_attr`` and the means."""
    probs, labels = np.asarray(probs, np.float64), np.asarray(labels)
    threshold = np.asarray(threshold, np.float64)
    known = labels >= 0
    gt = (labels == 1) & known
    neg = (labels == 0) & known
    pred = predicted_positive(probs, threshold) & known

    tp = (pred & gt).sum(0)
    tn = (~pred & neg).sum(0)
    fp = (pred & neg).sum(0)
    fn = (~pred & gt).sum(0)
    n_pos, n_neg = gt.sum(0), neg.sum(0)

    pos_recall = _div(tp, n_pos)
    neg_recall = _div(tn, n_neg)
    ma = (pos_recall + neg_recall) / 2
    acc = _div(tp + tn, n_pos + n_neg)
    prec = _div(tp, tp + fp)
    f1 = _div(2 * tp, 2 * tp + fp + fn)

    # instance-based: per sample over its known labels
    inter = (pred & gt).sum(1)
    union = (pred | gt).sum(1)
    n_pred, n_gt = pred.sum(1), gt.sum(1)
    inst_acc = float(np.mean(inter / (union + EPS)))
    inst_prec = float(np.mean(inter / (n_pred + EPS)))
    inst_rec = float(np.mean(inter / (n_gt + EPS)))
    inst_f1 = 2 * inst_prec * inst_rec / (inst_prec + inst_rec + EPS)

    def mean(x: np.ndarray) -> float:
        return float(np.nanmean(x)) if np.isfinite(x).any() else float("nan")

    return {
        "ma": mean(ma),
        "ma_rethinking": float(np.mean((np.nan_to_num(pos_recall) + np.nan_to_num(neg_recall)) / 2))
        if ma.size else float("nan"),
        "mean_acc": mean(acc),
        "mean_pos_recall": mean(pos_recall),
        "mean_neg_recall": mean(neg_recall),
        "mean_prec": mean(prec),
        "mean_f1": mean(f1),
        "instance_acc": inst_acc,
        "instance_prec": inst_prec,
        "instance_recall": inst_rec,
        "instance_f1": float(inst_f1),
        "n_samples": int(len(labels)),
        "n_attrs_evaluated": int(np.isfinite(ma).sum()),
        "per_attr": {"n_pos": n_pos, "n_neg": n_neg, "pos_recall": pos_recall, "neg_recall": neg_recall,
                     "ma": ma, "acc": acc, "prec": prec, "f1": f1},
    }


def majority_baseline(train_labels: np.ndarray, labels: np.ndarray) -> dict:
    """Metrics of always predicting each attribute's majority class on the train split."""
    known = train_labels >= 0
    rate = ((train_labels == 1) & known).sum(0) / np.maximum(known.sum(0), 1)
    probs = np.broadcast_to((rate >= 0.5).astype(np.float64), labels.shape)
    return compute_metrics(probs, labels)
