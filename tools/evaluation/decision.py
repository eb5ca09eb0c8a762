"""The decision rule a checkpoint ships: per-attribute thresholds chosen on validation (METRIC.DECISION).

mA (mean of each attribute's positive and negative recall) and instance F1 (precision and recall of
each image's label set) pull apart: a low threshold on a rare attribute lifts its positive recall (mA)
and adds false labels (F1). ``METRIC.DECISION`` names what the thresholds are chosen for, on the
validation predictions of each validated epoch (those of the best epoch go into the checkpoint's
inference contract, so ``--mode eval``, predict, video and search decide the same way):

* ``threshold``: METRIC.THRESHOLD for every attribute (nothing is fitted);
* ``ma``: each attribute's threshold maximises its own (R+ + R-) / 2, so mA (separable: exact);
* ``f1``: instance F1, by coordinate ascent over the attributes (it is not separable);
* ``tau_ma`` / ``tau_f1`` / ``tau_joint``: one parameter for every attribute instead of one each: the
  thresholds of the post-hoc logit adjustment ``z - tau log(pi / (1 - pi))`` (train priors pi), tau
  chosen on val from -0.5 .. 2 in steps of 0.1 (ties: the smallest |tau - 0|). Far less prone to
  over-fitting a small validation split (NATIVE: 267 images for 37 attributes);
* ``joint``: the harmonic mean 2 mA F1 / (mA + F1), by coordinate ascent. Dominated by the lower of the
  two, it cannot buy one metric with the other: on PETA it ranks the rules measured earlier as
  FRDL (75.1 / 75.0 -> 75.0) > logit adjustment tau 0.5 (77.2 / 73 -> 75.0) > threshold 0.5
  (69.4 / 77 -> 73.0) > tau 1 (80.3 / 59 -> 68.0), where the mean of the two would put tau 1 first.

Candidates are a fixed grid in logit space (sigmoid of -5 .. 5 in steps of 0.25: 41 thresholds from
0.0067 to 0.9933); ties go to the candidate nearest METRIC.THRESHOLD. An attribute without a positive
or without a negative validation label, or outside the evaluated attributes, keeps METRIC.THRESHOLD.
A prediction is positive when its probability is strictly above the threshold (``predicted_positive``).
The fitted rule's validation figures are optimistic (chosen there); the test split's are not.
"""
from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Sequence

import numpy as np
from yacs.config import CfgNode as CN

from tools.evaluation.metrics import EPS, decode_exclusive, predicted_positive

if TYPE_CHECKING:  # the evaluator imports this module's callers, not this module
    from tools.evaluation.evaluator import ContractScorer, SplitResult

log = logging.getLogger(__name__)

DECISIONS = ("threshold", "ma", "f1", "joint", "tau_ma", "tau_f1", "tau_joint")
TAUS = np.round(np.arange(-0.5, 2.0 + 1e-9, 0.1), 2) + 0.0  # the tau_* family's candidates (+ 0.0: no -0.0)
GRID = 1.0 / (1.0 + np.exp(-np.arange(-5.0, 5.0 + 1e-9, 0.25)))  # 41 candidate thresholds


def candidates(t0: float) -> np.ndarray:
    """The grid, nearest ``t0`` (in logit) first: ``argmax`` over it breaks ties towards ``t0``."""
    z0 = np.log(t0 / (1.0 - t0)) if 0.0 < t0 < 1.0 else 0.0
    z = np.log(GRID / (1.0 - GRID))
    return GRID[np.argsort(np.abs(z - z0), kind="stable")]


def harmonic(a: np.ndarray | float, b: np.ndarray | float) -> np.ndarray:
    """2ab / (a + b), 0 where both are 0."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.where(a + b > 0, 2 * a * b / np.maximum(a + b, EPS), 0.0)


class _State:
    """Counts under the current thresholds (unknown labels masked, as ``compute_metrics``)."""

    def __init__(self, probs: np.ndarray, labels: np.ndarray, thresholds: np.ndarray):
        self.p, self.t = np.asarray(probs, np.float64), thresholds.astype(np.float64).copy()
        known = labels >= 0
        self.gt, self.neg, self.known = (labels == 1) & known, (labels == 0) & known, known
        self.n_pos, self.n_neg = self.gt.sum(0), self.neg.sum(0)
        self.pred = predicted_positive(self.p, self.t) & known
        self.inter, self.npred = (self.pred & self.gt).sum(1), self.pred.sum(1)
        self.ngt = self.gt.sum(1)
        self.ma_attr = np.array([self.attr_ma(j, self.pred[:, j][None])[0] for j in range(self.p.shape[1])])

    def fittable(self, j: int) -> bool:
        return bool(self.n_pos[j] > 0 and self.n_neg[j] > 0)

    def attr_ma(self, j: int, pred: np.ndarray) -> np.ndarray:
        """(C,) (R+ + R-) / 2 of attribute ``j`` for (C, N) candidate predictions (NaN when undefined)."""
        if not self.fittable(j):
            return np.full(len(pred), np.nan)
        tp, tn = (pred & self.gt[:, j]).sum(1), (~pred & self.neg[:, j]).sum(1)
        return (tp / self.n_pos[j] + tn / self.n_neg[j]) / 2

    def instance_f1(self, j: int, pred: np.ndarray) -> np.ndarray:
        """(C,) instance F1 with attribute ``j`` predicted as (C, N) ``pred``, the others as now."""
        cur = self.pred[:, j]
        inter = self.inter - (cur & self.gt[:, j]) + (pred & self.gt[:, j])
        npred = self.npred - cur + pred
        prec = np.mean(inter / (npred + EPS), axis=1)
        rec = np.mean(inter / (self.ngt + EPS), axis=1)
        return 2 * prec * rec / (prec + rec + EPS)

    def ma(self, j: int, ma_j: np.ndarray) -> np.ndarray:
        """(C,) mA over the attributes with a defined mA when attribute ``j``'s becomes ``ma_j``."""
        others = np.delete(self.ma_attr, j)
        others = others[np.isfinite(others)]
        return (others.sum() + ma_j) / (len(others) + 1)

    def set(self, j: int, t: float) -> None:
        new = predicted_positive(self.p[:, j], t) & self.known[:, j]
        self.inter += (new & self.gt[:, j]).astype(int) - (self.pred[:, j] & self.gt[:, j])
        self.npred += new.astype(int) - self.pred[:, j]
        self.pred[:, j], self.t[j] = new, t
        self.ma_attr[j] = self.attr_ma(j, new[None])[0]


def _objective(state: _State, j: int, cands: np.ndarray, objective: str) -> np.ndarray:
    pred = predicted_positive(state.p[:, j][None], cands[:, None]) & state.known[:, j][None]
    ma_j = state.attr_ma(j, pred)
    if objective == "ma":
        return ma_j
    f1 = state.instance_f1(j, pred)
    return f1 if objective == "f1" else harmonic(state.ma(j, ma_j), f1)


def fit_thresholds(probs: np.ndarray, labels: np.ndarray, objective: str, t0: float = 0.5,
                   passes: int = 3) -> np.ndarray:
    """(A,) thresholds for (N, A) ``probs`` / ``labels`` (-1 = unknown) maximising ``objective``
    (ma | f1 | joint, see the module note), starting from ``t0`` everywhere."""
    if objective not in DECISIONS[1:]:
        raise ValueError(f"objective {objective!r} is not one of {', '.join(DECISIONS[1:])}")
    state = _State(probs, np.asarray(labels), np.full(np.shape(probs)[1], float(t0)))
    cands = candidates(t0)
    for _ in range(1 if objective == "ma" else passes):
        changed = False
        for j in range(state.p.shape[1]):
            if not state.fittable(j):
                continue
            score = _objective(state, j, np.concatenate([[state.t[j]], cands]), objective)
            best = int(np.argmax(score))  # the current threshold first: kept unless strictly beaten
            if best:
                state.set(j, float(cands[best - 1]))
                changed = True
        if not changed:
            break
    return state.t


def tau_thresholds(log_odds: np.ndarray, tau: float, tau0: float = 0.0) -> np.ndarray:
    """(A,) thresholds on probabilities already adjusted by ``tau0`` that decide as adjustment ``tau`` at 0.5:
    z - tau0 lo > (tau - tau0) lo, so t = sigmoid((tau - tau0) lo)."""
    return 1.0 / (1.0 + np.exp(-(tau - tau0) * np.asarray(log_odds, np.float64)))


def objective_value(probs: np.ndarray, labels: np.ndarray, thresholds: np.ndarray, objective: str) -> float:
    """mA, instance F1 or their harmonic mean (``compute_metrics``) under ``thresholds``."""
    from tools.evaluation.metrics import compute_metrics

    m = compute_metrics(probs, labels, thresholds)
    return {"ma": m["ma"], "f1": m["instance_f1"], "joint": float(harmonic(m["ma"], m["instance_f1"]))}[objective]


def fit_tau(probs: np.ndarray, labels: np.ndarray, log_odds: np.ndarray, objective: str,
            tau0: float = 0.0) -> tuple[float, np.ndarray]:
    """(tau, (A,) thresholds) of the tau family maximising ``objective`` (ma | f1 | joint) on ``probs``,
    which are already adjusted by ``tau0``; ties go to the tau nearest 0."""
    order = TAUS[np.argsort(np.abs(TAUS), kind="stable")]
    scores = [objective_value(probs, labels, tau_thresholds(log_odds, tau, tau0), objective) for tau in order]
    if np.all(np.isnan(scores)):  # nothing fittable on this validation: keep tau0's thresholds
        return tau0, tau_thresholds(log_odds, tau0, tau0)
    tau = float(order[int(np.nanargmax(scores))])
    return tau, tau_thresholds(log_odds, tau, tau0)


def log_odds(priors: Sequence[float]) -> np.ndarray:
    """log(pi / (1 - pi)) of the train priors, clipped as ``losses.common`` clips them."""
    p = np.clip(np.asarray(priors, np.float64), 1e-4, 1 - 1e-4)  # losses.common.PRIOR_EPS
    return np.log(p) - np.log1p(-p)


def choose_decision(cfg: CN, scorer: "ContractScorer", res: "SplitResult") -> "SplitResult":
    """METRIC.DECISION on one validation result: fit the thresholds of the evaluated attributes on its
    probabilities (after the contract's group decoding), store them in ``scorer.contract`` and return
    the result re-scored under them (``threshold``: the result unchanged)."""
    decision = cfg.METRIC.DECISION
    if decision == "threshold":
        return res
    c = scorer.contract
    cols = [c.attr_names.index(a) for a in scorer.attr_names]
    idx = c.exclusive_indices()
    decided = decode_exclusive(res.probs, idx) if idx else res.probs
    t = np.full(len(c.attr_names), float(cfg.METRIC.THRESHOLD))
    if decision.startswith("tau_"):
        tau0 = c.la_tau if c.posthoc else 0.0
        lo = log_odds(c.priors)
        tau, t[cols] = fit_tau(decided[:, cols], res.labels[:, cols], lo[cols], decision[4:], tau0)
        log.info("METRIC.DECISION %s: tau %.1f on %s", decision, tau, cfg.DATASET.VAL_SPLIT)
    else:
        t[cols] = fit_thresholds(decided[:, cols], res.labels[:, cols], decision, float(cfg.METRIC.THRESHOLD))
    c.thresholds = [float(x) for x in t]
    return replace(res, metrics=scorer.metrics(res.probs, res.labels))


def describe(thresholds: Sequence[float], names: Sequence[str], k: int = 5) -> str:
    """The thresholds furthest from 0.5, for the log."""
    t = np.asarray(thresholds, np.float64)
    far = np.argsort(-np.abs(t - 0.5), kind="stable")[:k]
    return ", ".join(f"{names[i]} {t[i]:.3f}" for i in far)
