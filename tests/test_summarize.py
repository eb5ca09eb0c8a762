"""scripts.summarize on hand-made summary.json files."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.summarize import SummaryError, load_runs, main

ROOT = Path(__file__).resolve().parents[1]


def metrics(ma, acc=0.8, pos=0.7, neg=0.9, f1=0.6):
    return {"mean_acc": acc, "ma": ma, "mean_pos_recall": pos, "mean_neg_recall": neg, "instance_f1": f1,
            "instance_acc": 0.5, "instance_prec": 0.6, "instance_recall": 0.6, "mean_f1": 0.5}


def write(root: Path, name: str, val: dict, test: dict | None, seed: int = 0, best_epoch: int = 3) -> None:
    d = root / name
    d.mkdir(parents=True)
    (d / "summary.json").write_text(json.dumps({"name": name, "dataset": "NATIVE", "best_epoch": best_epoch,
                                                "val": val, "test": test, "seed": seed,
                                                "config": str(d / "config.yaml")}))


@pytest.fixture
def results(tmp_path):
    root = tmp_path / "NATIVE"
    write(root, "baseline", metrics(0.70), metrics(0.68, f1=0.61))
    write(root, "baseline_seed1", metrics(0.72), metrics(0.66), seed=1)
    write(root, "baseline_seed2", metrics(0.71), metrics(0.67), seed=2)
    write(root, "focal", metrics(0.75, acc=0.85), metrics(0.73), best_epoch=7)
    write(root, "gradnorm", metrics(0.60), None)  # no test split
    return root


def test_markdown_table_sorted_by_val_ma_with_both_splits(results, capsys):
    assert main([str(results)]) == 0
    out = capsys.readouterr().out
    table = [line for line in out.splitlines() if line.startswith("| ")]
    header = table[0]
    assert header.startswith("| run | seed | best ep. | val mAcc | val mA | val R+ | val R- | val F1 | test mAcc")
    names = [line.split("|")[1].strip() for line in table[1:6]]
    assert names == ["focal", "baseline_seed1", "baseline_seed2", "baseline", "gradnorm"]
    focal = table[1].split("|")
    # run, seed, epoch, 5 val columns, 5 test columns, Δ val, Δ test
    assert [c.strip() for c in focal[1:16]] == ["focal", "0", "7", "85.00", "75.00", "70.00", "90.00", "60.00",
                                                "80.00", "73.00", "70.00", "90.00", "60.00", "+5.00", "+5.00"]
    gradnorm = [c.strip() for c in table[5].split("|")[1:16]]
    assert gradnorm[8:13] == ["–"] * 5 and gradnorm[14] == "–"  # no test split: dashes, not zeros


def test_seed_spread_groups_seed_runs(results, capsys):
    main([str(results)])
    out = capsys.readouterr().out
    spread = [line for line in out.splitlines() if line.startswith("| baseline | 3 |")]
    assert len(spread) == 1
    cells = [c.strip() for c in spread[0].split("|")]
    # val mA over 0.70, 0.72, 0.71: mean 71.00, sample std 1.00
    assert cells[4] == "71.00 ± 1.00 (70.00–72.00)"
    assert cells[9] == "67.00 ± 1.00 (66.00–68.00)"  # test mA
    assert "| focal | " not in out.split("Seed-to-seed")[1].split("### Rows")[0]


def test_csv_and_png_are_written(results):
    main([str(results)])
    with open(results / "summary_table.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == ["focal", "baseline_seed1", "baseline_seed2", "baseline", "gradnorm"]
    assert float(rows[0]["val_ma"]) == pytest.approx(0.75) and float(rows[0]["test_instance_f1"]) == 0.6
    assert rows[-1]["test_ma"] == "" and rows[-1]["seed"] == "0" and rows[-1]["best_epoch"] == "3"
    png = (results / "summary_table.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_bad_files_are_skipped_with_a_warning(results, capsys):
    (results / "broken").mkdir()
    (results / "broken" / "summary.json").write_text("{not json")
    write(results, "percent", metrics(71.0), None)  # not a fraction
    assert main([str(results), "--no-plot"]) == 0
    captured = capsys.readouterr()
    assert "skipped" in captured.err and "broken" in captured.err
    assert "percent" in captured.err and "not a fraction" in captured.err
    assert "| broken |" not in captured.out and not (results / "summary_table.png").exists()


def test_empty_or_missing_folder_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SummaryError, match="no summary.json"):
        load_runs(tmp_path)
    assert main([str(tmp_path / "nope")]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_module_entry_point(results):
    r = subprocess.run([sys.executable, "-m", "scripts.summarize", str(results), "--no-plot", "--reference", ""],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "| focal |" in r.stdout and "Δ val mA" not in r.stdout


def test_rows_keeps_only_the_named_rows_and_their_seeds(results, capsys):
    assert main([str(results), "--no-plot", "--rows", "baseline", "focal"]) == 0
    out = capsys.readouterr().out
    runs = [line.split("|")[1].strip() for line in out.split("###")[0].splitlines() if line.startswith("| ")][1:]
    assert runs == ["focal", "baseline_seed1", "baseline_seed2", "baseline"]  # gradnorm left out
    assert main([str(results), "--rows", "nope"]) == 2
    assert "no run under" in capsys.readouterr().err
