"""The ReID results table of a set of TASK reid / multitask runs, with paired bootstrap intervals.

    uv run python -m scripts.summarize_reid exp_results/PETA --reference peta_reid [--rows peta_reid peta_multitask]
                                          [--split test] [--resamples 2000] [--bootstrap-seed 0] [--out PATH.csv]

Reads every ``<run>/summary.json`` of a reid / multitask run under the folder and, per row (``<name>``
with its ``<name>_seed<k>`` runs, as scripts.summarize groups them), prints the mean ± sample std over
seeds of val mAP and of the split's rank-1, rank-5, mAP and mINP, and Δ rank-1 / Δ mAP against the
reference row with a paired bootstrap 95 % interval over queries: seed k of the row is paired with
seed k of the reference; for each pair the same queries are resampled with replacement for both runs
(the per-query results of ``reid_queries_best_<split>.npz``, written at the best epoch, or
``reid_queries_eval_<split>.npz`` of ``--mode eval`` for runs trained before that file existed); the
differences of all pairs are pooled and the interval is their 2.5th–97.5th percentiles. The
recomputed metrics are checked against summary.json (an eval file that does not reproduce training's
numbers is reported in the notes).
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tools.evaluation.embedding import QUERIES_FILE, read_query_stats
from tools.evaluation.reid import QueryStats
from configs.errors import exit_code_of
from scripts.summarize import (DASH, RESAMPLES, Interval, SummaryError, add_bootstrap_args, all_groups,
                             bootstrap_interval, mean_std, print_or_fail, row_name, run_seed)

TASKS = ("reid", "multitask")
COLUMNS = (("rank1", "rank-1"), ("rank5", "rank-5"), ("mAP", "mAP"), ("mINP", "mINP"))
DELTAS = ("rank1", "mAP")  # the Δ columns with intervals


@dataclass
class Queries:
    """One run's per-query results on a split, sorted by dataset row (the key that pairs runs)."""

    rows: np.ndarray
    stats: QueryStats
    source: str  # best | eval

    def values(self, key: str) -> np.ndarray:
        """Per valid query, the value whose mean is the metric (rank1: a first match at rank 1; mAP: AP)."""
        v = self.stats.valid
        return (self.stats.first[v] == 0).astype(np.float64) if key == "rank1" else self.stats.ap[v]

    def metric(self, key: str) -> float:
        return self.stats.summary()[key] if self.stats.valid.any() else math.nan


def read_queries(run_dir: Path, split: str) -> Queries | None:
    """The run's per-query file of ``split`` (best, else eval); None when it has neither."""
    for which in ("best", "eval"):
        path = run_dir / QUERIES_FILE.format(which=which, tag=split)
        if path.is_file():
            break
    else:
        return None
    try:
        rows, stats = read_query_stats(path)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
        raise SummaryError(f"{path}: unreadable per-query results ({type(e).__name__}: {str(e)[:120]})") from None
    return Queries(rows, stats, which)


def read_reid_run(path: Path, split: str) -> dict | None:
    """summary.json of a reid / multitask run -> {name, seed, val, test, queries, path}; None for PAR runs."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise SummaryError(f"{path}: unreadable summary ({type(e).__name__}: {e})") from None
    if not isinstance(data, dict) or data.get("task") not in TASKS:
        return None
    run = {"name": str(data.get("name") or path.parent.name), "seed": data.get("seed"), "path": path,
           "task": data["task"], "val": data.get("val") or {}, split: data.get(split) or {}}
    run["queries"] = read_queries(path.parent, split)
    return run


def load_reid_runs(root: Path, split: str, rows: list[str] | None) -> list[dict]:
    if not root.is_dir():
        raise SummaryError(f"{root} is not a folder; pass the dataset results folder, e.g. exp_results/PETA")
    runs = [r for p in sorted(root.rglob("summary.json")) if (r := read_reid_run(p, split))]
    if rows:
        runs = [r for r in runs if row_name(r) in rows]
    if not runs:
        raise SummaryError(f"no reid / multitask summary.json under {root}"
                           + (f" for the rows {', '.join(rows)}" if rows else ""))
    return runs


def pairing_problem(a: Queries, b: Queries) -> str | None:
    if not np.array_equal(a.rows, b.rows):
        return "other queries than the reference"
    if not np.array_equal(a.stats.n_matches, b.stats.n_matches):
        return "other gallery matches than the reference"
    if not a.stats.valid.any():
        return "no query with a match"
    return None


def paired_interval(pairs: list[tuple[int, Queries, Queries]], key: str, n_resamples: int, seed: int) -> Interval:
    """Pooled paired bootstrap over queries of metric(row) - metric(reference)."""
    def differences(row: Queries, ref: Queries, n: int, rng: np.random.Generator) -> np.ndarray:
        a, b = row.values(key), ref.values(key)
        idx = rng.integers(0, len(a), size=(n, len(a)))
        return a[idx].mean(1) - b[idx].mean(1)

    return bootstrap_interval(pairs, n_resamples, seed, problem_of=pairing_problem, differences=differences)


def check_queries(run: dict, split: str, notes: list[str]) -> None:
    """The per-query file must reproduce summary.json's numbers; say so when it does not."""
    q = run["queries"]
    if q is None:
        notes.append(f"{run['name']}: no {QUERIES_FILE.format(which='best', tag=split)} (nor an eval one: run "
                     "--mode eval on its best_model.pth), no interval")
        return
    for key in DELTAS:
        saved = run[split].get(key)
        if saved is not None and abs(q.metric(key) - saved) > 1e-6:
            notes.append(f"{run['name']}: {split} {key} from the {q.source} per-query file is {100 * q.metric(key):.2f}, "
                         f"summary.json says {100 * saved:.2f}")


def build_records(runs: list[dict], reference: str | None, split: str, n_resamples: int,
                  seed: int) -> tuple[list[dict], list[str]]:
    groups = all_groups(runs)
    notes: list[str] = []
    for r in runs:
        check_queries(r, split, notes)
    if reference and reference not in groups:
        notes.append(f"no row named {reference!r}: no Δ and no intervals")
    ref = {run_seed(r): r for r in groups.get(reference, [])}
    records = []
    for name, members in groups.items():
        rec = {"row": name, "members": members, "reference": name == reference, "task": members[0]["task"],
               "seeds": sorted(k for k in (run_seed(m) for m in members) if k is not None)}
        if ref and name != reference:
            mine = {run_seed(m): m for m in members}
            common = sorted(k for k in mine.keys() & ref.keys() if k is not None)
            pairs = [(k, mine[k]["queries"], ref[k]["queries"]) for k in common
                     if mine[k]["queries"] is not None and ref[k]["queries"] is not None]
            for key in DELTAS:
                deltas = [mine[k][split][key] - ref[k][split][key] for k in common
                          if mine[k][split].get(key) is not None and ref[k][split].get(key) is not None]
                rec[f"d_{key}"] = float(np.mean(deltas)) if deltas else math.nan
                rec[f"ci_{key}"] = paired_interval(pairs, key, n_resamples, seed)
                notes.extend(f"{name}: {n}" for n in rec[f"ci_{key}"].notes if f"{name}: {n}" not in notes)
        records.append(rec)
    records.sort(key=lambda r: (not r["reference"], r["row"]))
    return records, notes


def _values(members: list[dict], split: str, key: str) -> list[float]:
    return [m[split][key] for m in members if isinstance(m[split].get(key), (int, float))]


def _cell(vals: list[float]) -> str:
    m, s = mean_std(vals)
    if math.isnan(m):
        return DASH
    return f"{100 * m:.2f}" if math.isnan(s) else f"{100 * m:.2f} ± {100 * s:.2f}"


def _delta_cells(rec: dict, key: str) -> list[str]:
    if rec["reference"]:
        return ["ref.", "ref."]
    iv = rec.get(f"ci_{key}")
    d = rec.get(f"d_{key}", math.nan)
    if iv is None:
        return [DASH, DASH]
    ci = DASH if math.isnan(iv.low) else f"[{100 * iv.low:+.2f}, {100 * iv.high:+.2f}] {iv.verdict}"
    return [DASH if math.isnan(d) else f"{100 * d:+.2f}", ci]


def table(records: list[dict], split: str) -> str:
    head = (["row", "task", "seeds", "val mAP"] + [f"{split} {t}" for _, t in COLUMNS]
            + [f"Δ {split} rank-1", "95 % CI", f"Δ {split} mAP", "95 % CI"])
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 3 + ["---:"] * (len(head) - 3)) + "|"]
    for rec in records:
        cells = [rec["row"] + (" (ref.)" if rec["reference"] else ""), rec["task"],
                 " ".join(map(str, rec["seeds"])) or DASH, _cell(_values(rec["members"], "val", "mAP"))]
        cells += [_cell(_values(rec["members"], split, k)) for k, _ in COLUMNS]
        cells += _delta_cells(rec, "rank1") + _delta_cells(rec, "mAP")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_csv(records: list[dict], split: str, path: Path) -> Path:
    fields = ["row", "task", "seeds", "val_mAP_mean", "val_mAP_std"]
    fields += [f"{split}_{k}_{m}" for k, _ in COLUMNS for m in ("mean", "std")]
    fields += [f"{c}_{k}" for k in DELTAS for c in ("delta", "ci_low", "ci_high")]
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(fields)
        for rec in records:
            row = [rec["row"], rec["task"], " ".join(map(str, rec["seeds"]))]
            row += list(mean_std(_values(rec["members"], "val", "mAP")))
            for k, _ in COLUMNS:
                row += list(mean_std(_values(rec["members"], split, k)))
            for k in DELTAS:
                iv = rec.get(f"ci_{k}")
                row += [rec.get(f"d_{k}", math.nan), iv.low if iv else math.nan, iv.high if iv else math.nan]
            w.writerow(["" if isinstance(v, float) and math.isnan(v) else v for v in row])
    return path


def summarize_reid(root: str | Path, reference: str | None, *, rows: list[str] | None = None, split: str = "test",
                   n_resamples: int = RESAMPLES, seed: int = 0, out: str | Path | None = None) -> str:
    if n_resamples < 1 or seed < 0:
        raise SummaryError(f"--resamples must be >= 1 and --bootstrap-seed >= 0, got {n_resamples} and {seed}")
    root = Path(root)
    runs = load_reid_runs(root, split, rows)
    records, notes = build_records(runs, reference, split, n_resamples, seed)
    path = write_csv(records, split, Path(out) if out else root / "summary_reid.csv")
    text = [f"## {root}: {len(runs)} reid / multitask runs, best epoch of each (values in %)", "",
            table(records, split), "",
            f"Mean ± sample std over each row's seeds. Δ: row − {reference}, mean over shared seeds; 95 % CI: "
            f"paired bootstrap over the {split} queries ({n_resamples} resamples per seed pair, numpy seed {seed}), "
            "pooled over the paired seeds; better / worse: the interval excludes 0."]
    if notes:
        text += ["", "Notes:"] + [f"- {n}" for n in notes]
    return "\n".join(text + ["", f"written: {path}"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="ReID results table (rank-1 / mAP / mINP) with paired bootstrap "
                                            "intervals over queries.")
    p.add_argument("root", help="folder holding <run>/summary.json, e.g. exp_results/PETA")
    p.add_argument("--reference", default="", help="row the Δ columns compare to")
    p.add_argument("--split", default="test", choices=("val", "test"), help="the pair the table reports")
    p.add_argument("--out", default=None, help="CSV path (default <root>/summary_reid.csv)")
    add_bootstrap_args(p)
    args = p.parse_args(argv)
    return print_or_fail(lambda: summarize_reid(args.root, args.reference or None, rows=args.rows, split=args.split,
                                                n_resamples=args.resamples, seed=args.bootstrap_seed, out=args.out))


if __name__ == "__main__":
    sys.exit(exit_code_of(main))
