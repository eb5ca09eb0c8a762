"""scripts.summarize_reid: rows of reid / multitask runs, Δ rank-1 / mAP and the paired bootstrap over queries,
checked on hand-made runs whose per-query results are known."""
from __future__ import annotations

import json

import numpy as np
import pytest

from scripts.summarize import SummaryError
from scripts.summarize_reid import load_reid_runs, main, paired_interval, read_queries, summarize_reid


def write_run(root, name, seed, first, ap, *, task="reid", rows=None, n_matches=None, which="best", saved=None):
    """A run folder: summary.json (test rank1 / mAP as the per-query file gives them, unless ``saved``) and
    reid_queries_<which>_test.npz."""
    first, ap = np.asarray(first), np.asarray(ap, float)
    n = np.ones(len(first), int) if n_matches is None else np.asarray(n_matches)
    rows = np.arange(len(first)) if rows is None else np.asarray(rows)
    v = n > 0
    test = saved or {"rank1": float((first[v] == 0).mean()), "mAP": float(ap[v].mean()), "mINP": 0.5, "rank5": 1.0}
    d = root / name
    d.mkdir(parents=True)
    (d / "summary.json").write_text(json.dumps({"name": name, "seed": seed, "task": task, "val": {"mAP": 0.5},
                                                "test": test}))
    np.savez(d / f"reid_queries_{which}_test.npz", rows=rows, pids=rows + 1, n_matches=n, first=first, ap=ap,
             inp=ap)
    return d


def test_delta_and_interval_of_a_known_case(tmp_path):
    # reference: rank-1 hits on queries 0, 2 of 4; row: on 0, 1, 2 -> Δ rank-1 = +0.25, Δ mAP = +0.15
    write_run(tmp_path, "ref", 0, [0, 3, 0, 5], [1.0, 0.2, 1.0, 0.1])
    write_run(tmp_path, "better", 0, [0, 0, 0, 5], [1.0, 0.8, 1.0, 0.1])
    text = summarize_reid(tmp_path, "ref", n_resamples=500)
    line = next(x for x in text.splitlines() if x.startswith("| better |"))
    assert "+25.00" in line and "+15.00" in line
    # every resample's difference is >= 0 (the row is never worse on a query) -> interval in [0, 0.5 + eps]
    runs = load_reid_runs(tmp_path, "test", None)
    by = {r["name"]: r["queries"] for r in runs}
    iv = paired_interval([(0, by["better"], by["ref"])], "rank1", 500, 0)
    assert 0.0 <= iv.low <= 0.25 <= iv.high <= 0.75 and iv.seeds == [0]
    csv = (tmp_path / "summary_reid.csv").read_text().splitlines()
    assert csv[0].startswith("row,task,seeds") and any(x.startswith("better,reid,0") for x in csv)


def test_seeds_pool_and_no_match_queries_are_left_out(tmp_path):
    # query 3 has no match in both runs: it counts in neither metric nor the resamples
    for k in (0, 1):
        write_run(tmp_path, "ref" + ("" if k == 0 else f"_seed{k}"), k, [0, 1, 0, -1], [1, .5, 1, 0], n_matches=[1, 1, 1, 0])
        write_run(tmp_path, "better" + ("" if k == 0 else f"_seed{k}"), k, [0, 0, 1, -1], [1, 1, .5, 0], n_matches=[1, 1, 1, 0])
    runs = load_reid_runs(tmp_path, "test", None)
    assert {r["name"]: r["queries"].metric("rank1") for r in runs}["better"] == pytest.approx(2 / 3)
    text = summarize_reid(tmp_path, "ref", n_resamples=200)
    line = next(x for x in text.splitlines() if x.startswith("| better |"))
    assert "| 0 1 |" in line and "+0.00" in line  # same rank-1 on average: Δ 0, paired on both seeds


def test_mismatches_become_notes_not_numbers(tmp_path):
    write_run(tmp_path, "ref", 0, [0, 1], [1, .5])
    write_run(tmp_path, "other_queries", 0, [0, 1], [1, .5], rows=[5, 6])
    write_run(tmp_path, "stale", 0, [0, 0], [1, 1], which="eval", saved={"rank1": 0.5, "mAP": 0.75})
    (tmp_path / "par_run").mkdir()
    (tmp_path / "par_run" / "summary.json").write_text(json.dumps({"name": "par_run", "task": "par", "val": {"ma": .5}}))
    text = summarize_reid(tmp_path, "ref", n_resamples=50)
    assert "other_queries: seed 0: other queries than the reference, not paired" in text
    assert "stale: test rank1 from the eval per-query file is 100.00, summary.json says 50.00" in text
    assert "par_run" not in text  # a PAR run is not a ReID row
    assert read_queries(tmp_path / "par_run", "test") is None


def test_cli_errors_name_the_folder(tmp_path, capsys):
    assert main([str(tmp_path / "missing")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert main([str(tmp_path)]) == 2
    assert "no reid / multitask summary.json" in capsys.readouterr().err
    with pytest.raises(SummaryError, match="--resamples"):
        summarize_reid(tmp_path, None, n_resamples=0)
