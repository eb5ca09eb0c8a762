"""The results table of a set of runs (the seed study's columns), at each run's best epoch.

    uv run python -m scripts.summarize exp_results/NATIVE [--reference baseline] [--out-prefix PATH]
                                     [--resamples 2000] [--bootstrap-seed 0] [--rows NAME ...]

Reads every ``<run>/summary.json`` under the folder, prints a Markdown table (validation and test:
mean attribute accuracy, mA, mean positive recall, mean negative recall, instance F1, then
Rethinking-convention mA and the number of attributes mA averages) sorted by validation mA, and
writes the same table to ``summary_table.csv`` plus a bar chart ``summary_table.png`` in that folder.
Runs named ``<name>_seed<k>`` (what ``scripts.run_experiments --seeds`` writes) are also grouped with
``<name>`` into a seed-to-seed spread (mean, std, range) to judge which differences are noise.

The rows table (``summary_table_rows.csv`` too) says which rows differ from the reference row beyond
noise: per row (``<name>`` with its ``<name>_seed<k>`` runs) the mean ± sample std of every column
over its seeds, and the paired bootstrap 95 % interval of Δ test mA against the reference. Pairing
and pooling rule: seed k of the row is paired with seed k of the reference (the ``seed`` of
summary.json) wherever both exist; for each pair the same test images are resampled with replacement
``--resamples`` times for both runs (from ``predictions_best_test.npz``, decoded and thresholded as
each run's ``best_model.pth`` contract says) and mA is recomputed on each resample; the differences
of all pairs are pooled and the interval is their 2.5th and 97.5th percentiles. A row whose interval
excludes 0 is marked better or worse. Runs without per-image predictions (older runs) get the
mean ± std columns and "—" for the interval, with a note.
Metric values are fractions in [0, 1]; the tables show percentages.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import pickle
import re
import statistics
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from configs.errors import UserError, exit_code_of
from tools.evaluation.metrics import compute_metrics, decode_exclusive, predicted_positive

# (summary.json key, column title): the seed table's columns, in its order
COLUMNS = [("mean_acc", "mAcc"), ("ma", "mA"), ("mean_pos_recall", "R+"), ("mean_neg_recall", "R-"),
           ("instance_f1", "F1")]
# later columns: Rethinking_of_PAR's mA (undefined recalls count as 0) and how many attributes mA averages
EXTRA = [("ma_rethinking", "mA_R"), ("n_attrs_evaluated", "attrs")]
COUNTS = {"n_attrs_evaluated"}  # integers, not fractions
SPLITS = ("val", "test")
SEED_SUFFIX = re.compile(r"_seed(\d+)$")
PREDICTIONS = "predictions_best_test.npz"
RESAMPLES = 2000  # bootstrap resamples per seed pair
BLOCK = 250  # resamples per matrix product (bounds memory: BLOCK x N counts)
DASH = "—"  # no interval


class SummaryError(UserError, ValueError):
    """No usable runs, or a summary.json that breaks the format; the message names the file."""


def _metric(value, where: str) -> float:
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SummaryError(f"{where} must be a number, got {value!r}")
    if value > 1.0 + 1e-9 or value < 0.0:
        raise SummaryError(f"{where} = {value} is not a fraction in [0, 1] (metrics are stored as fractions)")
    return float(value)


def _count(value, where: str) -> float:
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise SummaryError(f"{where} must be a count >= 0, got {value!r}")
    return float(value)


def _block(data: dict, split: str, path: Path) -> dict | None:
    block = data.get(split)
    if block is None:
        return None
    if not isinstance(block, dict):
        raise SummaryError(f"{path}: '{split}' must be an object of metrics or null")
    return {k: (_count if k in COUNTS else _metric)(block.get(k), f"{path}: {split}.{k}") for k, _ in COLUMNS + EXTRA}


def read_run(path: Path) -> dict:
    """One summary.json -> {name, seed, best_epoch, val: {key: float}, test: {key: float} | None, path}."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise SummaryError(f"{path}: unreadable summary ({type(e).__name__}: {e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("val"), dict):
        raise SummaryError(f"{path}: needs a 'val' object of metrics")
    run = {"name": str(data.get("name") or path.parent.name), "seed": data.get("seed"),
           "best_epoch": data.get("best_epoch"), "dataset": data.get("dataset", ""), "path": path}
    for split in SPLITS:
        run[split] = _block(data, split, path)
    return run


def load_runs(root: str | Path) -> tuple[list[dict], list[str]]:
    """All runs under ``root`` (sorted by val mA, best first) and warnings for skipped files."""
    root = Path(root)
    if not root.is_dir():
        raise SummaryError(f"{root} is not a folder; pass the dataset results folder, e.g. exp_results/NATIVE")
    runs, warnings = [], []
    for path in sorted(root.rglob("summary.json")):
        try:
            runs.append(read_run(path))
        except SummaryError as e:
            warnings.append(f"skipped {e}")
    if not runs:
        raise SummaryError(f"no summary.json under {root}; train some experiments first "
                           "(e.g. uv run python -m scripts.run_experiments)")
    runs.sort(key=lambda r: (-_sort_value(r), r["name"]))
    return runs, warnings


def _sort_value(run: dict) -> float:
    v = run["val"]["ma"]
    return -math.inf if math.isnan(v) else v


def _pct(v: float | None) -> str:
    return "–" if v is None or math.isnan(v) else f"{100 * v:.2f}"


def _cell(key: str, v: float | None) -> str:
    if key in COUNTS:
        return "–" if v is None or math.isnan(v) else f"{v:g}"
    return _pct(v)


def _signed(v: float) -> str:
    return "–" if math.isnan(v) else f"{100 * v:+.2f}"


def _reference(runs: list[dict], name: str | None) -> dict | None:
    return next((r for r in runs if r["name"] == name), None) if name else None


def _value(run: dict, split: str, key: str) -> float | None:
    return run[split][key] if run[split] else None


def markdown_table(runs: list[dict], reference: str | None = "baseline") -> str:
    """One line per run; the Rethinking mA and attribute counts come last (after the Δ columns)."""
    ref = _reference(runs, reference)
    head = ["run", "seed", "best ep."] + [f"{s} {t}" for s in SPLITS for _, t in COLUMNS]
    if ref:
        head += [f"Δ {s} mA" for s in SPLITS]
    head += [f"{s} {t}" for s in SPLITS for _, t in EXTRA]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for r in runs:
        cells = [r["name"], str(r["seed"] if r["seed"] is not None else "–"),
                 str(r["best_epoch"] if r["best_epoch"] is not None else "–")]
        cells += [_pct(_value(r, s, k)) for s in SPLITS for k, _ in COLUMNS]
        if ref:
            for s in SPLITS:
                both = r[s] and ref[s]
                cells.append(_signed(r[s]["ma"] - ref[s]["ma"]) if both else "–")
        cells += [_cell(k, _value(r, s, k)) for s in SPLITS for k, _ in EXTRA]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def row_name(run: dict) -> str:
    """The experiment a run belongs to: its name without a ``_seed<k>`` suffix."""
    return SEED_SUFFIX.sub("", run["name"])


def all_groups(runs: list[dict]) -> dict[str, list[dict]]:
    """Every row's runs (``name`` and ``name_seed<k>``), in the order of ``runs``."""
    groups: dict[str, list[dict]] = {}
    for r in runs:
        groups.setdefault(row_name(r), []).append(r)
    return groups


def seed_groups(runs: list[dict]) -> dict[str, list[dict]]:
    """``name`` and ``name_seed<k>`` runs grouped under ``name``; only groups of 2+ runs."""
    return {k: v for k, v in all_groups(runs).items() if len(v) > 1}


def spread_table(runs: list[dict]) -> str:
    """Mean ± sample std (and min–max) of every column over the seeds of each group."""
    groups = seed_groups(runs)
    if not groups:
        return ""
    head = ["group", "runs"] + [f"{s} {t}" for s in SPLITS for _, t in COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + "|"]
    for name, members in sorted(groups.items()):
        cells = [name, str(len(members))]
        for s in SPLITS:
            for k, _ in COLUMNS:
                vals = [m[s][k] for m in members if m[s] and not math.isnan(m[s][k])]
                if len(vals) < 2:
                    cells.append("–")
                    continue
                mean, sd = statistics.mean(vals), statistics.stdev(vals)
                cells.append(f"{100 * mean:.2f} ± {100 * sd:.2f} ({100 * min(vals):.2f}–{100 * max(vals):.2f})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------- paired bootstrap of Δ test mA


@dataclass
class Predictions:
    """One run's test images as its contract scores them: what the bootstrap resamples."""

    rows: np.ndarray  # (N,) dataset row indices, sorted: the key that pairs two runs' images
    labels: np.ndarray  # (N, A) int8, -1 = not annotated
    decided: np.ndarray  # (N, A) float64 probabilities after the contract's group decoding
    thresholds: np.ndarray  # (A,)
    attr_names: tuple[str, ...]

    @property
    def pred(self) -> np.ndarray:
        return predicted_positive(self.decided, self.thresholds)

    def ma(self) -> float:
        return compute_metrics(self.decided, self.labels, self.thresholds)["ma"]


def read_contract(path: Path):
    """``best_model.pth["contract"]`` as an InferenceContract (weights memory-mapped, not read)."""
    import torch

    from tools.inference.contract import InferenceContract

    if not path.is_file():
        raise SummaryError(f"{path} is missing, so the thresholds and group decoding of the predictions are unknown")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, OSError, ValueError) as e:
        raise SummaryError(f"{path}: unreadable checkpoint ({type(e).__name__}: {str(e)[:120]})") from None
    contract = ckpt.get("contract") if isinstance(ckpt, dict) else None
    if not isinstance(contract, dict):
        raise SummaryError(f"{path} holds no inference contract (trained before contracts existed)")
    return InferenceContract.from_dict(contract)


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    try:
        with np.load(path, allow_pickle=False) as d:
            rows, probs, labels, names = d["rows"], d["probs"], d["labels"], [str(a) for a in d["attr_names"]]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
        raise SummaryError(f"{path}: unreadable predictions ({type(e).__name__}: {str(e)[:120]})") from None
    n = len(rows)
    if probs.ndim != 2 or labels.shape != probs.shape or probs.shape != (n, len(names)):
        raise SummaryError(f"{path}: rows {rows.shape}, probs {probs.shape}, labels {labels.shape} and "
                           f"{len(names)} attr_names do not fit together")
    if len(np.unique(rows)) != n:
        raise SummaryError(f"{path}: a dataset row appears twice in 'rows'")
    return rows, probs, labels, names


def load_predictions(run_dir: Path) -> Predictions | None:
    """The run's test predictions decoded as its ``best_model.pth`` contract says; None without the npz."""
    path = run_dir / PREDICTIONS
    if not path.is_file():
        return None
    rows, probs, labels, names = _read_npz(path)
    contract = read_contract(run_dir / "best_model.pth")
    if list(contract.attr_names) != names or len(contract.thresholds) != len(names):
        raise SummaryError(f"{path}: attributes differ from those of the contract in best_model.pth")
    groups = contract.exclusive_indices()
    decided = decode_exclusive(probs, groups) if groups else probs
    order = np.argsort(rows, kind="stable")
    return Predictions(rows[order], labels[order], decided[order].astype(np.float64), contract.threshold_array(),
                       tuple(names))


def resample_counts(idx: np.ndarray, n: int) -> np.ndarray:
    """(B, N) image indices drawn with replacement -> (B, N) multiplicities (all mA needs)."""
    b = len(idx)
    flat = (idx + n * np.arange(b)[:, None]).ravel()
    return np.bincount(flat, minlength=b * n).reshape(b, n)


def resampled_ma(pred: np.ndarray, labels: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """mA of each resample (B,), exactly as compute_metrics on ``probs[idx], labels[idx]``: labels < 0
    ignored, an attribute without positives or negatives in the resample left out of the mean."""
    gt, neg = labels == 1, labels == 0
    cols = np.concatenate([pred & gt, ~pred & neg, gt, neg], axis=1).astype(np.float64)
    tp, tn, n_pos, n_neg = np.split(counts.astype(np.float64) @ cols, 4, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        per_attr = (np.where(n_pos > 0, tp / n_pos, np.nan) + np.where(n_neg > 0, tn / n_neg, np.nan)) / 2
    n_attrs = np.isfinite(per_attr).sum(1)
    return np.where(n_attrs > 0, np.nansum(per_attr, 1) / np.maximum(n_attrs, 1), np.nan)


def paired_differences(row: Predictions, ref: Predictions, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """mA(row) - mA(ref) on ``n_resamples`` resamples of the same test images (one draw for both)."""
    n = len(row.rows)
    pred_row, pred_ref = row.pred, ref.pred
    out = []
    for start in range(0, n_resamples, BLOCK):
        counts = resample_counts(rng.integers(0, n, size=(min(BLOCK, n_resamples - start), n)), n)
        out.append(resampled_ma(pred_row, row.labels, counts) - resampled_ma(pred_ref, ref.labels, counts))
    return np.concatenate(out)


def pairing_problem(row: Predictions, ref: Predictions) -> str | None:
    """Why two runs' test predictions cannot be paired image by image (None: they can)."""
    if not len(row.rows):
        return "no test images"
    if row.attr_names != ref.attr_names:
        return "other attributes than the reference"
    if not np.array_equal(row.rows, ref.rows):
        return "other test images than the reference"
    if not np.array_equal(row.labels, ref.labels):
        return "other test labels than the reference"
    return None


@dataclass
class Interval:
    """Pooled paired-bootstrap percentiles of Δ test mA over the seeds a row shares with the reference."""

    low: float = math.nan
    high: float = math.nan
    seeds: list = field(default_factory=list)  # the paired seeds that entered the pool
    notes: list = field(default_factory=list)

    @property
    def verdict(self) -> str:
        if math.isnan(self.low):
            return DASH
        return "better" if self.low > 0 else "worse" if self.high < 0 else "no"


def bootstrap_interval(pairs: list[tuple], n_resamples: int = RESAMPLES, seed: int = 0, *,
                       problem_of=pairing_problem, differences=paired_differences) -> Interval:
    """``pairs``: (seed, row, reference) — Predictions by default; ``problem_of(row, ref)`` says why a pair
    cannot be paired, ``differences(row, ref, n, rng)`` gives n resampled differences. Pair i draws its
    resamples from ``default_rng([seed, i])``; the differences of every pair are pooled before the percentiles."""
    out, pooled = Interval(), []
    for i, (k, row, ref) in enumerate(pairs):
        problem = problem_of(row, ref)
        if problem:
            out.notes.append(f"seed {k}: {problem}, not paired")
            continue
        diffs = differences(row, ref, n_resamples, np.random.default_rng([seed, i]))
        pooled.append(diffs[np.isfinite(diffs)])
        out.seeds.append(k)
    pooled = np.concatenate(pooled) if pooled else np.empty(0)
    if pooled.size:
        out.low, out.high = (float(v) for v in np.percentile(pooled, [2.5, 97.5]))
    return out


def run_seed(run: dict) -> int | None:
    """summary.json's ``seed``; for runs without one, the ``_seed<k>`` suffix of the name."""
    s = run["seed"]
    if isinstance(s, int) and not isinstance(s, bool):
        return s
    m = SEED_SUFFIX.search(run["name"])
    return int(m.group(1)) if m else None


def _by_seed(members: list[dict], notes: dict) -> dict:
    out: dict = {}
    for r in members:
        k = run_seed(r)
        if k is None:
            notes[f"{r['name']}: no seed in summary.json, not paired"] = None
        elif k in out:
            notes[f"{r['name']}: seed {k} is also {out[k]['name']}'s; only {out[k]['name']} is paired"] = None
        else:
            out[k] = r
    return out


def _predictions(run: dict, cache: dict, notes: dict) -> Predictions | None:
    """Cached ``load_predictions`` of a run; problems (and a recomputed mA off summary.json) become notes."""
    key = run["path"]
    if key not in cache:
        try:
            p = load_predictions(run["path"].parent)
        except SummaryError as e:
            p, problem = None, str(e)
        else:
            problem = None if p else f"{run['name']}: no {PREDICTIONS} (trained before per-image predictions)"
            if p and run["test"] and abs(p.ma() - run["test"]["ma"]) > 1e-6:
                problem = (f"{run['name']}: test mA recomputed from {PREDICTIONS} is {100 * p.ma():.2f}, "
                           f"summary.json says {100 * run['test']['ma']:.2f}")
        cache[key] = p
        if problem:
            notes[problem] = None
    return cache[key]


def _test_ma(run: dict) -> float:
    return run["test"]["ma"] if run["test"] else math.nan


def compare_row(members: list[dict], ref_members: list[dict], cache: dict, notes: dict, *,
                n_resamples: int = RESAMPLES, seed: int = 0) -> tuple[float, Interval]:
    """Δ test mA of a row against the reference (mean over shared seeds) and its bootstrap interval."""
    mine, theirs = _by_seed(members, notes), _by_seed(ref_members, notes)
    common = sorted(mine.keys() & theirs.keys())
    if common:
        deltas = [_test_ma(mine[k]) - _test_ma(theirs[k]) for k in common]
    else:
        name = row_name(members[0])
        notes[f"{name}: no seed in common with {row_name(ref_members[0])}, no interval"] = None
        deltas = [np.nanmean([_test_ma(r) for r in members]) - np.nanmean([_test_ma(r) for r in ref_members])]
    finite = [d for d in deltas if not math.isnan(d)]
    delta = float(np.mean(finite)) if finite else math.nan
    pairs = []
    for k in common:
        row, ref = _predictions(mine[k], cache, notes), _predictions(theirs[k], cache, notes)
        if row is not None and ref is not None:
            pairs.append((k, row, ref))
    interval = bootstrap_interval(pairs, n_resamples, seed)
    for n in interval.notes:
        notes[f"{row_name(members[0])}: {n}"] = None
    return delta, interval


def compare_rows(runs: list[dict], reference: str | None = "baseline", *, n_resamples: int = RESAMPLES,
                 seed: int = 0) -> tuple[list[dict], list[str]]:
    """One record per row (reference first, then by mean val mA) and the notes, each once."""
    groups = all_groups(runs)
    ref_members = groups.get(reference) if reference else None
    notes: dict = {}
    if reference and ref_members is None:
        notes[f"no row named {reference!r}: no Δ and no intervals (pass --reference)"] = None
    cache: dict = {}
    records = []
    for name, members in groups.items():
        rec = {"row": name, "members": members, "reference": name == reference,
               "seeds": sorted({run_seed(m) for m in members if run_seed(m) is not None}),
               "delta": math.nan, "interval": Interval()}
        if ref_members is not None and name != reference:
            rec["delta"], rec["interval"] = compare_row(members, ref_members, cache, notes,
                                                        n_resamples=n_resamples, seed=seed)
        records.append(rec)
    records.sort(key=lambda r: (not r["reference"], -_mean_val_ma(r), r["row"]))
    return records, list(notes)


def _values(members: list[dict], split: str, key: str) -> list[float]:
    return [m[split][key] for m in members if m[split] and not math.isnan(m[split][key])]


def _mean_val_ma(rec: dict) -> float:
    vals = _values(rec["members"], "val", "ma")
    return float(np.mean(vals)) if vals else -math.inf


def mean_std(vals: list[float]) -> tuple[float, float]:
    """Mean and sample std (ddof 1; NaN for one value) of a column over a row's seeds."""
    if not vals:
        return math.nan, math.nan
    return float(np.mean(vals)), (float(np.std(vals, ddof=1)) if len(vals) > 1 else math.nan)


def _mean_std_cell(key: str, vals: list[float]) -> str:
    m, s = mean_std(vals)
    if math.isnan(s):
        return _cell(key, m)
    if key in COUNTS:
        return f"{m:g}" if s == 0 else f"{m:.1f} ± {s:.1f}"
    return f"{100 * m:.2f} ± {100 * s:.2f}"


def _interval_cells(rec: dict) -> list[str]:
    if rec["reference"]:
        return ["ref.", "ref.", "ref.", "ref."]
    iv = rec["interval"]
    ci = DASH if math.isnan(iv.low) else f"[{100 * iv.low:+.2f}, {100 * iv.high:+.2f}]"
    paired = " ".join(str(k) for k in iv.seeds) or DASH
    return [_signed(rec["delta"]), paired, ci, iv.verdict]


def rows_table(records: list[dict]) -> str:
    """Mean ± std per column over each row's seeds, Δ test mA and its paired bootstrap interval."""
    head = (["row", "seeds"] + [f"{s} {t}" for s in SPLITS for _, t in COLUMNS + EXTRA]
            + ["Δ test mA", "paired seeds", "95 % CI", "vs ref."])
    align = ["---"] * 2 + ["---:"] * (len(head) - 6) + ["---:", "---", "---:", "---"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]
    for rec in records:
        cells = [rec["row"] + (" (ref.)" if rec["reference"] else ""),
                 " ".join(str(k) for k in rec["seeds"]) or "–"]
        cells += [_mean_std_cell(k, _values(rec["members"], s, k)) for s in SPLITS for k, _ in COLUMNS + EXTRA]
        lines.append("| " + " | ".join(cells + _interval_cells(rec)) + " |")
    return "\n".join(lines)


def footnote(reference: str, n_resamples: int, seed: int) -> str:
    """What the rows table's columns mean, and the pairing / pooling rule of its interval."""
    return ("Mean ± sample std (ddof 1) over each row's seeds (one seed: its value). "
            f"Δ test mA: row − {reference}, mean over the seeds both have (difference of the means when they "
            "share none). 95 % CI: paired bootstrap over test images: seed k of the row is paired with seed k "
            f"of {reference} where both exist; "
            f"for each pair the same test images are resampled with replacement {n_resamples} times for both runs "
            f"(numpy seed {seed}) and mA is recomputed with each run's contract (thresholds, group arg-max); the "
            "differences of all pairs are pooled and the interval is their 2.5th–97.5th percentiles. better / worse: "
            f"the interval excludes 0. {DASH}: no interval (a run without {PREDICTIONS}, i.e. trained before "
            "per-image predictions were written, or no seed in common).")


def _raw(key: str, v: float | None) -> str:
    if v is None or math.isnan(v):
        return ""
    return f"{v:g}" if key in COUNTS else f"{v:.6f}"


def write_csv(runs: list[dict], path: Path) -> Path:
    """Raw fractions, one row per run, in the table's order (the Rethinking mA and counts last)."""
    fields = (["name", "dataset", "seed", "best_epoch"] + [f"{s}_{k}" for s in SPLITS for k, _ in COLUMNS]
              + [f"{s}_{k}" for s in SPLITS for k, _ in EXTRA])
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(fields)
        for r in runs:
            row = [r["name"], r["dataset"], r["seed"], r["best_epoch"]]
            row += [_raw(k, _value(r, s, k)) for s in SPLITS for k, _ in COLUMNS]
            row += [_raw(k, _value(r, s, k)) for s in SPLITS for k, _ in EXTRA]
            w.writerow(row)
    return path


def write_rows_csv(records: list[dict], path: Path) -> Path:
    """The rows table as raw fractions: mean and std per column, Δ test mA, interval, verdict."""
    keys = [(s, k) for s in SPLITS for k, _ in COLUMNS + EXTRA]
    fields = (["row", "runs", "seeds"] + [f"{s}_{k}_{m}" for s, k in keys for m in ("mean", "std")]
              + ["delta_test_ma", "paired_seeds", "ci_low", "ci_high", "verdict"])
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(fields)
        for rec in records:
            iv = rec["interval"]
            row = [rec["row"], len(rec["members"]), " ".join(str(k) for k in rec["seeds"])]
            for s, k in keys:
                row += [_raw(k, v) for v in mean_std(_values(rec["members"], s, k))]
            row += [_raw("ma", rec["delta"]),
                    " ".join(str(k) for k in iv.seeds), _raw("ma", iv.low), _raw("ma", iv.high),
                    "reference" if rec["reference"] else iv.verdict.replace(DASH, "")]
            w.writerow(row)
    return path


def bar_chart(runs: list[dict], path: Path) -> Path:
    """One panel per split (test only when some run has it): grouped bars of the five columns."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    splits = [s for s in SPLITS if any(r[s] for r in runs)]
    fig, axes = plt.subplots(len(splits), 1, figsize=(max(7, 1.1 * len(runs) + 3), 3.6 * len(splits)),
                             squeeze=False)
    x = np.arange(len(runs))
    width = 0.8 / len(COLUMNS)
    for ax, s in zip(axes[:, 0], splits):
        for i, (k, title) in enumerate(COLUMNS):
            vals = [100 * r[s][k] if r[s] and not math.isnan(r[s][k]) else 0.0 for r in runs]
            ax.bar(x + (i - (len(COLUMNS) - 1) / 2) * width, vals, width, label=title)
        ax.set_xticks(x, [r["name"] for r in runs], rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(f"{s} (%)")
        ax.set_ylim(0, 100)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))  # outside: never hides a bar
    axes[0, 0].set_title("runs sorted by validation mA (best epoch of each)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path



def _rows_section(runs: list[dict], reference: str | None, prefix: Path, *, n_resamples: int,
                  seed: int) -> tuple[list[str], Path]:
    """The rows table with its footnote and notes, and its CSV."""
    records, notes = compare_rows(runs, reference, n_resamples=n_resamples, seed=seed)
    path = write_rows_csv(records, prefix.with_name(prefix.name + "_rows.csv"))
    title = (f"### Rows vs {reference}: mean ± std over seeds, Δ test mA with paired bootstrap 95 % interval"
             if reference else "### Rows: mean ± std over seeds")
    text = ["", title, "", rows_table(records)]
    if reference:
        text += ["", footnote(reference, n_resamples, seed)]
    if notes:
        text += ["", "Notes:"] + [f"- {n}" for n in notes]
    return text, path


def summarize(root: str | Path, reference: str | None = "baseline", out_prefix: str | Path | None = None,
              plot: bool = True, *, n_resamples: int = RESAMPLES, seed: int = 0, rows: list[str] | None = None) -> str:
    """Print-ready Markdown (runs, seed spread, rows vs reference); writes <prefix>.csv, <prefix>_rows.csv
    and <prefix>.png."""
    if n_resamples < 1 or seed < 0:
        raise SummaryError(f"--resamples must be >= 1 and --bootstrap-seed >= 0, got {n_resamples} and {seed}")
    runs, warnings = load_runs(root)
    if rows:
        runs = [r for r in runs if row_name(r) in rows]
        if not runs:
            raise SummaryError(f"no run under {root} belongs to the rows {', '.join(rows)}")
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    prefix = Path(out_prefix) if out_prefix else Path(root) / "summary_table"
    prefix.parent.mkdir(parents=True, exist_ok=True)
    csv_path = write_csv(runs, prefix.with_suffix(".csv"))
    text = [f"## {Path(root)}: {len(runs)} runs, best epoch of each, sorted by val mA (values in %)", "",
            markdown_table(runs, reference)]
    spread = spread_table(runs)
    if spread:
        text += ["", "### Seed-to-seed spread (mean ± std (min–max))", "", spread]
    rows, rows_csv = _rows_section(runs, reference, prefix, n_resamples=n_resamples, seed=seed)
    text += rows
    files = [str(csv_path), str(rows_csv)]
    if plot:
        files.append(str(bar_chart(runs, prefix.with_suffix(".png"))))
    text += ["", "written: " + ", ".join(files)]
    return "\n".join(text)


def add_bootstrap_args(p: argparse.ArgumentParser) -> None:
    """The options every results table shares: which rows, and the bootstrap's size and seed."""
    p.add_argument("--rows", nargs="+", default=None, help="only these rows (run names without _seed<k>)")
    p.add_argument("--resamples", type=int, default=RESAMPLES, help="bootstrap resamples per seed pair")
    p.add_argument("--bootstrap-seed", type=int, default=0, help="numpy seed of the bootstrap resamples")


def print_or_fail(make_text) -> int:
    """Print ``make_text()``; a SummaryError becomes one 'error:' line and exit code 2."""
    try:
        print(make_text())
    except SummaryError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Results table of every run under a dataset results folder.")
    p.add_argument("root", nargs="?", default="exp_results/NATIVE", help="folder holding <run>/summary.json")
    p.add_argument("--reference", default="baseline", help="row the Δ mA columns compare to ('' = none)")
    p.add_argument("--out-prefix", default=None, help="CSV/PNG path without suffix (default <root>/summary_table)")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG")
    add_bootstrap_args(p)
    args = p.parse_args(argv)
    return print_or_fail(lambda: summarize(args.root, args.reference or None, args.out_prefix, not args.no_plot,
                                           n_resamples=args.resamples, seed=args.bootstrap_seed, rows=args.rows))


if __name__ == "__main__":
    sys.exit(exit_code_of(main))
