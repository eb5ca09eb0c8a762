"""scripts.summarize's rows table: mean ± std over seeds and the paired bootstrap interval of Δ test mA,
on hand-made runs (summary.json + predictions_best_test.npz + a best_model.pth holding only a contract)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tools.evaluation.metrics import compute_metrics, decode_exclusive
from scripts.summarize import (PREDICTIONS, bootstrap_interval, load_predictions, main, paired_differences,
                             resample_counts, resampled_ma)

N, ATTRS = 300, ["U_red", "U_green", "U_blue", "Hat", "Bag", "Hair_long"]
GROUPS = [["upper_colour", "exclusive", "U_red", "U_green", "U_blue"]]


def make_labels(rng: np.random.Generator) -> np.ndarray:
    labels = np.zeros((N, len(ATTRS)), np.int8)
    labels[np.arange(N), rng.integers(0, 3, N)] = 1  # one upper colour each
    labels[:, 3:] = rng.random((N, 3)) < 0.4
    labels[rng.random((N, len(ATTRS))) < 0.05] = -1  # some not annotated
    return labels


def contract(group_argmax: bool = False, thresholds: list[float] | None = None) -> dict:
    return {"attr_names": ATTRS, "groups": GROUPS, "height": 64, "width": 32, "mean": [0.5] * 3, "std": [0.2] * 3,
            "thresholds": thresholds or [0.5] * len(ATTRS), "group_argmax": group_argmax}


def scored(probs: np.ndarray, labels: np.ndarray, c: dict) -> dict:
    """The metrics the trainer would have written for these predictions under contract ``c``."""
    decided = decode_exclusive(probs, [[0, 1, 2]]) if c["group_argmax"] else probs
    m = compute_metrics(decided, labels, np.asarray(c["thresholds"]))
    return {k: m[k] for k in ("mean_acc", "ma", "ma_rethinking", "n_attrs_evaluated", "mean_pos_recall",
                              "mean_neg_recall", "instance_f1")}


def write_run(root: Path, name: str, seed: int, probs: np.ndarray | None, labels: np.ndarray, *,
              c: dict | None = None, val_ma: float = 0.6, rows: np.ndarray | None = None) -> dict:
    """One run folder; ``probs`` None = an older run with summary.json only."""
    d = root / name
    d.mkdir(parents=True)
    c = c or contract()
    test = scored(probs, labels, c) if probs is not None else {"ma": 0.55, "mean_acc": 0.7}
    val = {**test, "ma": val_ma}
    (d / "summary.json").write_text(json.dumps({"name": name, "dataset": "NATIVE", "seed": seed, "best_epoch": 2,
                                                "val": val, "test": test}))
    if probs is not None:
        rows = np.arange(N) if rows is None else rows
        perm = np.random.default_rng(seed + 100).permutation(N)  # the trainer's order is not sorted
        np.savez_compressed(d / PREDICTIONS, image=np.asarray([f"{r:05d}.jpg" for r in rows])[perm],
                            rows=rows[perm].astype(np.int64), probs=probs[perm].astype(np.float32),
                            labels=labels[perm], attr_names=np.asarray(ATTRS))
        torch.save({"model": {}, "contract": c}, d / "best_model.pth")
    return test


def good_probs(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.clip(np.where(labels == 1, 0.8, 0.2) + rng.normal(0, 0.1, labels.shape), 0, 1)


@pytest.fixture
def table(tmp_path):
    """baseline: random probabilities, seeds 0-2; good: labels + noise, seeds 0-2; same: the baseline's
    predictions, seeds 0-1; old: no npz; lonely: seed 7 only."""
    root, rng = tmp_path / "NATIVE", np.random.default_rng(0)
    labels = make_labels(rng)
    tests = {}
    for k in range(3):
        base = rng.random(labels.shape)
        suffix = f"_seed{k}" if k else ""
        tests[f"baseline{suffix}"] = write_run(root, f"baseline{suffix}", k, base, labels, val_ma=0.5 + 0.01 * k)
        tests[f"good{suffix}"] = write_run(root, f"good{suffix}", k, good_probs(labels, rng), labels, val_ma=0.8)
        if k < 2:
            tests[f"same{suffix}"] = write_run(root, f"same{suffix}", k, base, labels, val_ma=0.55)
    write_run(root, "old", 0, None, labels, val_ma=0.52)
    write_run(root, "lonely", 7, rng.random(labels.shape), labels, val_ma=0.51)
    return root, labels, tests


def rows_lines(out: str) -> dict[str, list[str]]:
    section = out.split("### Rows vs")[1]
    lines = [ln for ln in section.splitlines() if ln.startswith("| ")][1:]
    return {c[0].replace(" (ref.)", ""): c for c in ([x.strip() for x in ln.split("|")[1:-1]] for ln in lines)}


def test_resampled_ma_equals_compute_metrics_on_each_resample():
    rng = np.random.default_rng(1)
    labels = make_labels(rng)
    labels[:, 4] = 0
    labels[:3, 4] = 1  # rare positives: many resamples have none, so the attribute drops out there
    labels[:, 5] = -1  # never annotated: always left out
    probs, thr = rng.random(labels.shape), np.array([0.5, 0.4, 0.6, 0.5, 0.3, 0.5])
    idx = rng.integers(0, N, size=(6, N))
    got = resampled_ma(probs >= thr, labels, resample_counts(idx, N))
    want = [compute_metrics(probs[i], labels[i], thr)["ma"] for i in idx]
    assert got == pytest.approx(want, rel=1e-12, abs=1e-12)
    assert len({compute_metrics(probs[i], labels[i], thr)["n_attrs_evaluated"] for i in idx}) > 1


def test_predictions_are_decoded_as_the_contract_says(tmp_path):
    rng = np.random.default_rng(2)
    labels, probs = make_labels(rng), rng.random((N, len(ATTRS)))
    for argmax in (False, True):
        c = contract(argmax, [0.5, 0.5, 0.5, 0.3, 0.7, 0.5])
        test = write_run(tmp_path, f"run_{argmax}", 0, probs, labels, c=c)
        p = load_predictions(tmp_path / f"run_{argmax}")
        assert np.array_equal(p.rows, np.arange(N)) and np.array_equal(p.labels, labels)
        want = decode_exclusive(probs.astype(np.float32), [[0, 1, 2]]) if argmax else probs.astype(np.float32)
        assert np.array_equal(p.decided, want.astype(np.float64))
        assert p.ma() == pytest.approx(test["ma"], abs=1e-7)
    assert load_predictions(tmp_path / "nothing_here") is None


def test_rows_table_separates_signal_from_noise(table, capsys):
    root, _, _ = table
    assert main([str(root), "--no-plot", "--resamples", "1000"]) == 0
    out = capsys.readouterr().out
    rows = rows_lines(out)
    assert list(rows)[0] == "baseline" and rows["baseline"][-4:] == ["ref."] * 4
    delta, paired, ci, verdict = rows["good"][-4:]
    low, high = (float(v) for v in ci.strip("[]").split(","))
    assert paired == "0 1 2" and verdict == "better" and 0 < low < float(delta) < high
    assert rows["same"][-4:] == ["+0.00", "0 1", "[+0.00, +0.00]", "no"]
    assert rows["old"][-3:] == ["—", "—", "—"] and rows["old"][1] == "0"
    assert rows["lonely"][-3:] == ["—", "—", "—"]
    assert "old: no predictions_best_test.npz" in out and "lonely: no seed in common with baseline" in out
    assert "pooled" in out and "seed k of the row is paired with seed k of baseline" in out
    table_lines = [ln for ln in out.split("### Rows vs")[1].splitlines() if ln.startswith("|")]
    assert len({ln.count("|") for ln in table_lines}) == 1  # header, alignment and rows line up
    assert main([str(root), "--no-plot", "--bootstrap-seed", "-1"]) == 2


def test_mean_and_std_over_seeds_match_numpy(table, capsys):
    root, _, tests = table
    main([str(root), "--no-plot", "--resamples", "10"])
    rows = rows_lines(capsys.readouterr().out)
    head = ["row", "seeds"] + [f"{s} {t}" for s in ("val", "test") for t in
                               ("mAcc", "mA", "R+", "R-", "F1", "mA_R", "attrs")]
    for key, title in (("ma", "test mA"), ("instance_f1", "test F1"), ("ma_rethinking", "test mA_R")):
        vals = [tests[n][key] for n in ("baseline", "baseline_seed1", "baseline_seed2")]
        cell = rows["baseline"][head.index(title)]
        assert cell == f"{100 * np.mean(vals):.2f} ± {100 * np.std(vals, ddof=1):.2f}"
    assert rows["baseline"][head.index("val mA")] == "51.00 ± 1.00"
    assert rows["baseline"][head.index("test attrs")] == "6"
    with open(root / "summary_table_rows.csv", newline="") as f:
        csv_rows = {r["row"]: r for r in csv.DictReader(f)}
    good = [tests[n]["ma"] for n in ("good", "good_seed1", "good_seed2")]
    assert float(csv_rows["good"]["test_ma_mean"]) == pytest.approx(np.mean(good), abs=1e-6)
    assert float(csv_rows["good"]["test_ma_std"]) == pytest.approx(np.std(good, ddof=1), abs=1e-6)
    assert csv_rows["good"]["verdict"] == "better" and csv_rows["baseline"]["verdict"] == "reference"
    assert csv_rows["old"]["ci_low"] == "" and csv_rows["old"]["runs"] == "1"


def test_bootstrap_is_deterministic_and_pools_the_seed_pairs(table):
    root, _, _ = table
    pairs = [(k, load_predictions(root / f"good{s}"), load_predictions(root / f"baseline{s}"))
             for k, s in enumerate(["", "_seed1", "_seed2"])]
    a, b = bootstrap_interval(pairs, 500, seed=3), bootstrap_interval(pairs, 500, seed=3)
    assert (a.low, a.high, a.seeds) == (b.low, b.high, [0, 1, 2])
    assert bootstrap_interval(pairs, 500, seed=4).low != a.low
    pooled = np.concatenate([paired_differences(r, ref, 500, np.random.default_rng([3, i]))
                             for i, (_, r, ref) in enumerate(pairs)])
    assert (a.low, a.high) == tuple(np.percentile(pooled, [2.5, 97.5]))
    assert np.mean(pooled) == pytest.approx(np.mean([r.ma() - ref.ma() for _, r, ref in pairs]), abs=0.01)


def test_runs_on_other_test_images_are_not_paired(tmp_path, capsys):
    rng = np.random.default_rng(5)
    labels = make_labels(rng)
    write_run(tmp_path, "baseline", 0, rng.random(labels.shape), labels)
    write_run(tmp_path, "shifted", 0, rng.random(labels.shape), labels, rows=np.arange(N) + 1)
    assert main([str(tmp_path), "--no-plot", "--resamples", "10"]) == 0
    out = capsys.readouterr().out
    assert rows_lines(out)["shifted"][-2:] == ["—", "—"]
    assert "shifted: seed 0: other test images than the reference, not paired" in out


def test_seed_rows_run_every_seed(capsys):
    from scripts.run_experiments import main as run_all

    assert run_all(["--dry-run", "--only", "baseline", "focal", "--seeds", "0", "1", "--seed-rows", "focal"]) == 0
    labels = [ln.split()[0] for ln in capsys.readouterr().out.splitlines() if ln.strip()]
    assert labels == ["baseline", "focal", "focal_seed1"]
    assert run_all(["--dry-run", "--only", "baseline", "focal", "--seeds", "0", "1", "--seed-rows", "all"]) == 0
    assert [ln.split()[0] for ln in capsys.readouterr().out.splitlines() if ln.strip()] == [
        "baseline", "focal", "baseline_seed1", "focal_seed1"]  # seed-major: a stopped table has whole columns
    assert run_all(["--dry-run", "--only", "focal", "--seeds", "0", "1"]) == 0  # the default row need not run
    assert [ln.split()[0] for ln in capsys.readouterr().out.splitlines() if ln.strip()] == ["focal"]
    with pytest.raises(SystemExit, match="--seed-rows nope"):
        run_all(["--dry-run", "--only", "baseline", "--seeds", "0", "1", "--seed-rows", "nope"])


def test_shards_split_the_table_between_processes(capsys):
    from scripts.run_experiments import main as run_all

    def labels(*extra):
        assert run_all(["--dry-run", "--only", "baseline", "focal", "head_finetune", "--seeds", "0", "1",
                        "--seed-rows", "all", *extra]) == 0
        return [ln.split()[0] for ln in capsys.readouterr().out.splitlines() if ln.strip()]

    whole = labels()
    first, second = labels("--shard", "0/2"), labels("--shard", "1/2")
    assert first == whole[0::2] and second == whole[1::2] and sorted(first + second) == sorted(whole)
    for bad in ("2/2", "x"):
        with pytest.raises(SystemExit):
            run_all(["--dry-run", "--only", "baseline", "--shard", bad])
