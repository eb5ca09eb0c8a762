"""The Pareto table of decision rules of a finished run, from its saved predictions (no retraining).

    uv run python -m scripts.decision_table exp_results/NATIVE/lite0_native [--out table.md] \
        [--cross exp_results/NATIVE/lite0_native/eval_cross_PETA_TownCentre_all_predictions.npz --map peta_to_native]

Reads ``predictions_best_val.npz`` / ``predictions_best_test.npz`` and the contract in ``best_model.pth``
(priors, post-hoc tau, group decoding, evaluated attributes), recovers the raw logits' probabilities
(undoing the contract's post-hoc adjustment), and scores each rule on val and test: one threshold 0.5,
post-hoc logit adjustment tau 0.5 and 1 (train priors; threshold 0.5), one tau fitted on val, and
per-attribute thresholds fitted on val, each for mA, instance F1 and their harmonic mean
(``tools.evaluation.decision``); plus the rule the checkpoint ships. ``--cross`` adds the checkpoint's
cross-domain eval predictions (the same rules: nothing is fitted there). Prints a Markdown table (val / test mA, instance F1 and their harmonic mean H) and
writes it with a JSON copy beside the predictions (``decision_table.md`` / ``.json``).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from configs.errors import UserError, exit_code_of

if TYPE_CHECKING:  # imported lazily: the command's --help stays fast
    from tools.inference.contract import InferenceContract



class TableError(UserError):
    """A run folder without what the table needs."""


def _load(run: Path, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    path = run / f"predictions_best_{split}.npz"
    if not path.is_file():
        raise TableError(f"{path} is missing; the table needs a finished run's predictions_best_val/test.npz")
    with np.load(path, allow_pickle=False) as z:
        return z["probs"].astype(np.float64), z["labels"], [str(a) for a in z["attr_names"]]


def raw_probs(probs: np.ndarray, contract: InferenceContract) -> np.ndarray:
    """The probabilities before the contract's post-hoc adjustment (tau 0)."""
    if not contract.posthoc:
        return probs
    z = np.log(np.clip(probs, 1e-12, 1)) - np.log(np.clip(1 - probs, 1e-12, 1))
    from tools.evaluation.decision import log_odds

    return 1 / (1 + np.exp(-(z + contract.la_tau * log_odds(contract.priors))))


def adjusted(probs: np.ndarray, priors: Sequence[float], tau: float) -> np.ndarray:
    """Post-hoc logit adjustment ``z - tau log(pi / (1 - pi))`` of raw probabilities."""
    z = np.log(np.clip(probs, 1e-12, 1)) - np.log(np.clip(1 - probs, 1e-12, 1))
    from tools.evaluation.decision import log_odds

    return 1 / (1 + np.exp(-(z - tau * log_odds(priors))))


def _score(probs: np.ndarray, labels: np.ndarray, thresholds: np.ndarray, contract: InferenceContract) -> dict:
    import torch

    from tools.evaluation.decision import harmonic
    from tools.evaluation.evaluator import ContractScorer

    c = type(contract).from_dict({**contract.to_dict(), "thresholds": list(map(float, thresholds))})
    m = ContractScorer(c, torch.device("cpu")).metrics(probs, labels)
    return {"ma": m["ma"], "f1": m["instance_f1"], "h": float(harmonic(m["ma"], m["instance_f1"]))}


def rules(contract: InferenceContract, val: np.ndarray, val_labels: np.ndarray) -> list[tuple[str, str, np.ndarray | None]]:
    """(name, probability kind, thresholds or None = fit) of each rule."""
    from tools.evaluation.decision import fit_tau, fit_thresholds, log_odds
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
        tau, t[cols] = fit_tau(decided[:, cols], val_labels[:, cols], log_odds(contract.priors)[cols], objective)
        return f"tau fitted on val for {objective} (tau {tau:.1f})", "raw", t

    half = np.full(a, 0.5)
    out = [("threshold 0.5", "raw", half), ("tau 0.5", "tau0.5", half), ("tau 1", "tau1", half)]
    out += [fit_tau_rule(o) for o in ("ma", "f1", "joint")] if contract.priors else []
    out += [(f"per-attribute, {o} on val", "raw", fit(o)) for o in ("ma", "f1", "joint")]
    return out + [("shipped (contract)", "shipped", contract.threshold_array())]


def variants(probs: np.ndarray, contract: InferenceContract) -> dict[str, np.ndarray]:
    """The probabilities of one set under each rule's kind: shipped, raw (tau 0), tau 0.5, tau 1."""
    out = {"shipped": probs, "raw": raw_probs(probs, contract)}
    for tau in (0.5, 1.0) if contract.priors else ():  # the tau rules need the train priors
        out[f"tau{tau:g}"] = adjusted(out["raw"], contract.priors, tau)
    return out


def split_scorer(probs: np.ndarray, labels: np.ndarray, contract: InferenceContract) -> Callable[[str, np.ndarray], dict]:
    """Scores a rule (probability kind, thresholds) on one split of the run's own dataset."""
    v = variants(probs, contract)
    return lambda kind, t: _score(v[kind], labels, t, contract)


def cross_scorer(path: Path, contract: InferenceContract, attr_map: str) -> Callable[[str, np.ndarray], dict]:
    """Scores a rule on a cross-domain eval's saved predictions (``eval_cross_*_predictions.npz``)."""
    from tools.evaluation.cross_domain import (
        cross_domain_metrics,
        pair_attributes,
        shipped_decisions,
    )
    from tools.evaluation.decision import harmonic

    with np.load(path, allow_pickle=False) as z:
        probs, labels, names = z["probs"].astype(np.float64), z["labels"], [str(a) for a in z["data_attr_names"]]
    cfg = SimpleNamespace(TEST=SimpleNamespace(ATTR_MAP=attr_map))
    pairing = pair_attributes(cfg, contract, SimpleNamespace(attr_names=names, name=path.stem))
    v = variants(probs, contract)

    def score(kind: str, t: np.ndarray) -> dict:
        c = type(contract).from_dict({**contract.to_dict(), "thresholds": list(map(float, t))})
        m = cross_domain_metrics(shipped_decisions(v[kind], c), labels, pairing)
        return {"ma": m["ma"], "f1": m["instance_f1"], "h": float(harmonic(m["ma"], m["instance_f1"]))}

    return score


def decision_table(run: Path, cross: Sequence[Path] = (), attr_map: str = "") -> list[dict]:
    """One row per rule: mA, instance F1 and their harmonic mean on val, test and each cross-domain set."""
    from scripts.summarize import read_contract

    contract = read_contract(run / "best_model.pth")
    data = {s: _load(run, s) for s in ("val", "test")}
    if any(names != list(contract.attr_names) for _, _, names in data.values()):
        raise TableError(f"{run}: the predictions' attributes differ from the contract's")
    sets = {s: split_scorer(p, y, contract) for s, (p, y, _) in data.items()}
    sets.update({p.stem.replace("eval_cross_", "").replace("_predictions", ""): cross_scorer(p, contract, attr_map)
                 for p in cross})
    val_kinds = variants(data["val"][0], contract)
    rows = []
    for name, kind, t in rules(contract, val_kinds["raw"], data["val"][1]):
        if kind not in val_kinds:
            continue
        row = {"rule": name}
        for tag, score in sets.items():
            row.update({f"{tag}_{k}": v for k, v in score(kind, t).items()})
        rows.append(row)
    return rows


def markdown(rows: list[dict]) -> str:
    tags = list(dict.fromkeys(k.rsplit("_", 1)[0] for k in rows[0] if k != "rule"))
    head = "| rule | " + " | ".join(f"{t} mA | {t} F1 | {t} H" for t in tags) + " |\n"
    head += "|---" * (1 + 3 * len(tags)) + "|\n"
    return head + "".join("| " + r["rule"] + " | " + " | ".join(f"{r[f'{t}_ma']:.4f} | {r[f'{t}_f1']:.4f} | "
                                                              f"{r[f'{t}_h']:.4f}" for t in tags) + " |\n"
                          for r in rows)


def main(argv: Sequence[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description="Pareto table of decision rules from a run's saved predictions")
    ap.add_argument("run", type=Path, help="experiment folder (predictions_best_val/test.npz, best_model.pth)")
    ap.add_argument("--out", type=Path, default=None, help="Markdown file (default <run>/decision_table.md)")
    ap.add_argument("--cross", type=Path, nargs="*", default=[],
                    help="eval_cross_*_predictions.npz of this checkpoint: the rules scored there too")
    ap.add_argument("--map", default="", help="the TEST.ATTR_MAP those cross-domain evals used (e.g. peta_to_native)")
    a = ap.parse_args(argv)
    rows = decision_table(a.run, a.cross, a.map)
    text = markdown(rows)
    print(text)
    out = a.out or a.run / "decision_table.md"
    out.write_text(text)
    out.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    sys.exit(exit_code_of(main))
