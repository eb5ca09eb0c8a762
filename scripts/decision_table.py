"""The Pareto table of decision rules of a finished run, from its saved predictions (no retraining).

    uv run python -m scripts.decision_table exp_results/NATIVE/lite0_native [--out table.md]

Reads ``predictions_best_val.npz`` / ``predictions_best_test.npz`` and the contract in ``best_model.pth``
(priors, post-hoc tau, group decoding, evaluated attributes), recovers the raw logits' probabilities
(undoing the contract's post-hoc adjustment), and scores each rule on val and test: one threshold 0.5,
post-hoc logit adjustment tau 0.5 and 1 (train priors; threshold 0.5), one tau fitted on val, and
per-attribute thresholds fitted on val, each for mA, instance F1 and their harmonic mean
(``tools.evaluation.decision``); plus the rule the checkpoint ships. Prints a Markdown table (val / test mA, instance F1 and their harmonic mean H) and
writes it with a JSON copy beside the predictions (``decision_table.md`` / ``.json``).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from configs.errors import UserError

PRIOR_EPS = 1e-4  # losses.common's clip of the priors


class TableError(UserError):
    """A run folder without what the table needs."""


def _load(run: Path, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    path = run / f"predictions_best_{split}.npz"
    if not path.is_file():
        raise TableError(f"{path} is missing; the table needs a finished run's predictions_best_val/test.npz")
    with np.load(path, allow_pickle=False) as z:
        return z["probs"].astype(np.float64), z["labels"], [str(a) for a in z["attr_names"]]


def _log_odds(priors: Sequence[float]) -> np.ndarray:
    p = np.clip(np.asarray(priors, np.float64), PRIOR_EPS, 1 - PRIOR_EPS)
    return np.log(p) - np.log1p(-p)


def raw_probs(probs: np.ndarray, contract) -> np.ndarray:
    """The probabilities before the contract's post-hoc adjustment (tau 0)."""
    if not contract.posthoc:
        return probs
    z = np.log(np.clip(probs, 1e-12, 1)) - np.log(np.clip(1 - probs, 1e-12, 1))
    return 1 / (1 + np.exp(-(z + contract.la_tau * _log_odds(contract.priors))))


def adjusted(probs: np.ndarray, priors: Sequence[float], tau: float) -> np.ndarray:
    """Post-hoc logit adjustment ``z - tau log(pi / (1 - pi))`` of raw probabilities."""
    z = np.log(np.clip(probs, 1e-12, 1)) - np.log(np.clip(1 - probs, 1e-12, 1))
    return 1 / (1 + np.exp(-(z - tau * _log_odds(priors))))


def _score(probs: np.ndarray, labels: np.ndarray, thresholds: np.ndarray, contract) -> dict:
    from tools.evaluation.evaluator import ContractScorer
    from tools.evaluation.decision import harmonic
    import torch

    c = type(contract).from_dict({**contract.to_dict(), "thresholds": list(map(float, thresholds))})
    m = ContractScorer(c, torch.device("cpu")).metrics(probs, labels)
    return {"ma": m["ma"], "f1": m["instance_f1"], "h": float(harmonic(m["ma"], m["instance_f1"]))}


def rules(contract, val: np.ndarray, val_labels: np.ndarray) -> list[tuple[str, str, np.ndarray | None]]:
    """(name, probability kind, thresholds or None = fit) of each rule."""
    from tools.evaluation.decision import fit_tau, fit_thresholds
    from tools.evaluation.metrics import decode_exclusive

    a = len(contract.attr_names)
    idx = contract.exclusive_indices()
    cols = [contract.attr_names.index(x) for x in (contract.eval_attrs or contract.attr_names)]

    def fit(objective: str) -> np.ndarray:
        t = np.full(a, 0.5)
        decided = decode_exclusive(val, idx) if idx else val
        t[cols] = fit_thresholds(decided[:, cols], val_labels[:, cols], objective)
        return t

    def fit_tau_rule(objective: str) -> tuple[str, str, np.ndarray]:
        t = np.full(a, 0.5)
        decided = decode_exclusive(val, idx) if idx else val
        tau, t[cols] = fit_tau(decided[:, cols], val_labels[:, cols], _log_odds(contract.priors)[cols], objective)
        return f"tau fitted on val for {objective} (tau {tau:.1f})", "raw", t

    half = np.full(a, 0.5)
    out = [("threshold 0.5", "raw", half), ("tau 0.5", "tau0.5", half), ("tau 1", "tau1", half)]
    out += [fit_tau_rule(o) for o in ("ma", "f1", "joint")] if contract.priors else []
    out += [(f"per-attribute, {o} on val", "raw", fit(o)) for o in ("ma", "f1", "joint")]
    return out + [("shipped (contract)", "shipped", contract.threshold_array())]


def decision_table(run: Path) -> list[dict]:
    """One row per rule: val / test mA, instance F1 and their harmonic mean."""
    from scripts.summarize import read_contract

    contract = read_contract(run / "best_model.pth")
    data = {s: _load(run, s) for s in ("val", "test")}
    if any(names != list(contract.attr_names) for _, _, names in data.values()):
        raise TableError(f"{run}: the predictions' attributes differ from the contract's")
    probs = {s: {"shipped": p, "raw": raw_probs(p, contract)} for s, (p, _, _) in data.items()}
    for s in probs:  # the tau rules need the train priors (saved by LOSS.LA_MODE posthoc runs)
        for tau in (0.5, 1.0) if contract.priors else ():
            probs[s][f"tau{tau:g}"] = adjusted(probs[s]["raw"], contract.priors, tau)
    rows = []
    for name, kind, t in rules(contract, probs["val"]["raw"], data["val"][1]):
        if kind not in probs["val"]:
            continue
        row = {"rule": name}
        for s in ("val", "test"):
            row.update({f"{s}_{k}": v for k, v in _score(probs[s][kind], data[s][1], t, contract).items()})
        rows.append(row)
    return rows


def markdown(rows: list[dict]) -> str:
    head = "| rule | val mA | val F1 | val H | test mA | test F1 | test H |\n|---|---|---|---|---|---|---|\n"
    return head + "".join(f"| {r['rule']} | {r['val_ma']:.4f} | {r['val_f1']:.4f} | {r['val_h']:.4f} | "
                          f"{r['test_ma']:.4f} | {r['test_f1']:.4f} | {r['test_h']:.4f} |\n" for r in rows)


def main(argv: Sequence[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description="Pareto table of decision rules from a run's saved predictions")
    ap.add_argument("run", type=Path, help="experiment folder (predictions_best_val/test.npz, best_model.pth)")
    ap.add_argument("--out", type=Path, default=None, help="Markdown file (default <run>/decision_table.md)")
    a = ap.parse_args(argv)
    rows = decision_table(a.run)
    text = markdown(rows)
    print(text)
    out = a.out or a.run / "decision_table.md"
    out.write_text(text)
    out.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    try:
        main()
    except UserError as e:
        sys.exit(f"error: {e}")
