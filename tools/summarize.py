"""The results table of a set of runs (the seed study's columns), at each run's best epoch.

    uv run python -m tools.summarize exp_results/NATIVE [--reference baseline] [--out-prefix PATH]

Reads every ``<run>/summary.json`` under the folder, prints a Markdown table (validation and test:
mean attribute accuracy, mA, mean positive recall, mean negative recall, instance F1) sorted by
validation mA, and writes the same table to ``summary_table.csv`` plus a bar chart
``summary_table.png`` in that folder. Runs named ``<name>_seed<k>`` are also grouped with
``<name>`` into a seed-to-seed spread (mean, std, range) to judge which differences are noise.
Metric values are fractions in [0, 1]; the tables show percentages.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import re
import statistics
import sys
from pathlib import Path

from tools.errors import UserError

# (summary.json key, column title): the seed table's columns, in its order
COLUMNS = [("mean_acc", "mAcc"), ("ma", "mA"), ("mean_pos_recall", "R+"), ("mean_neg_recall", "R-"),
           ("instance_f1", "F1")]
SPLITS = ("val", "test")
SEED_SUFFIX = re.compile(r"_seed\d+$")


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
        block = data.get(split)
        if block is None:
            run[split] = None
            continue
        if not isinstance(block, dict):
            raise SummaryError(f"{path}: '{split}' must be an object of metrics or null")
        run[split] = {k: _metric(block.get(k), f"{path}: {split}.{k}") for k, _ in COLUMNS}
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
                           "(e.g. uv run python -m tools.run_experiments)")
    runs.sort(key=lambda r: (-_sort_value(r), r["name"]))
    return runs, warnings


def _sort_value(run: dict) -> float:
    v = run["val"]["ma"]
    return -math.inf if math.isnan(v) else v


def _pct(v: float | None) -> str:
    return "–" if v is None or math.isnan(v) else f"{100 * v:.2f}"


def _signed(v: float) -> str:
    return "–" if math.isnan(v) else f"{100 * v:+.2f}"


def _reference(runs: list[dict], name: str | None) -> dict | None:
    return next((r for r in runs if r["name"] == name), None) if name else None


def markdown_table(runs: list[dict], reference: str | None = "baseline") -> str:
    ref = _reference(runs, reference)
    head = ["run", "seed", "best ep."] + [f"{s} {t}" for s in SPLITS for _, t in COLUMNS]
    if ref:
        head += [f"Δ {s} mA" for s in SPLITS]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for r in runs:
        cells = [r["name"], str(r["seed"] if r["seed"] is not None else "–"),
                 str(r["best_epoch"] if r["best_epoch"] is not None else "–")]
        for s in SPLITS:
            cells += [_pct(r[s][k] if r[s] else None) for k, _ in COLUMNS]
        if ref:
            for s in SPLITS:
                both = r[s] and ref[s]
                cells.append(_signed(r[s]["ma"] - ref[s]["ma"]) if both else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def seed_groups(runs: list[dict]) -> dict[str, list[dict]]:
    """``name`` and ``name_seed<k>`` runs grouped under ``name``; only groups of 2+ runs."""
    groups: dict[str, list[dict]] = {}
    for r in runs:
        groups.setdefault(SEED_SUFFIX.sub("", r["name"]), []).append(r)
    return {k: v for k, v in groups.items() if len(v) > 1}


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


def write_csv(runs: list[dict], path: Path) -> Path:
    """Raw fractions, one row per run, in the table's order."""
    fields = ["name", "dataset", "seed", "best_epoch"] + [f"{s}_{k}" for s in SPLITS for k, _ in COLUMNS]
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(fields)
        for r in runs:
            row = [r["name"], r["dataset"], r["seed"], r["best_epoch"]]
            for s in SPLITS:
                row += ["" if not r[s] or math.isnan(r[s][k]) else f"{r[s][k]:.6f}" for k, _ in COLUMNS]
            w.writerow(row)
    return path


def bar_chart(runs: list[dict], path: Path) -> Path:
    """One panel per split (test only when some run has it): grouped bars of the five columns."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

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


def summarize(root: str | Path, reference: str | None = "baseline", out_prefix: str | Path | None = None,
              plot: bool = True) -> str:
    """Print-ready Markdown (main table + seed spread); writes <prefix>.csv and <prefix>.png."""
    runs, warnings = load_runs(root)
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
    files = [str(csv_path)]
    if plot:
        files.append(str(bar_chart(runs, prefix.with_suffix(".png"))))
    text += ["", "written: " + ", ".join(files)]
    return "\n".join(text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Results table of every run under a dataset results folder.")
    p.add_argument("root", nargs="?", default="exp_results/NATIVE", help="folder holding <run>/summary.json")
    p.add_argument("--reference", default="baseline", help="run the Δ mA columns compare to ('' = none)")
    p.add_argument("--out-prefix", default=None, help="CSV/PNG path without suffix (default <root>/summary_table)")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG")
    args = p.parse_args(argv)
    try:
        print(summarize(args.root, args.reference or None, args.out_prefix, not args.no_plot))
    except SummaryError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
