"""Footage index at scale (not a test): a synthetic index of N tracks, its ingest rate, and the latency of
attribute queries and example queries (512-d embeddings) as the web app answers them.

    uv run python -m scripts.benchmark_index --sizes 10000 100000 1000000 --out exp_results/benchmarks/index

Per size: tracks of 1000 per video over 8 cameras and one day, NATIVE's 37 attributes (probabilities drawn
per group), a unit 512-d embedding per track (identities + noise, stored as float16), a 64x32 JPEG
thumbnail; ingested with the video mode's own transaction (``VideoIngestor``, one per video). Then a fresh
``Searcher`` loads the index (``load_s``: the web app's start) and answers ``--queries`` attribute queries
(2-4 conditions, half with a camera and a time window) and as many example queries (a stored track's
embedding, optionally with the same filters); p50 / p95 of each in milliseconds. ``--index`` may be a
postgresql:// URL (its tables are dropped first).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from cctv.index.ingest import ModelInfo, VideoIngestor, _Pending
from cctv.index.search import Request, Searcher
from cctv.index.store import metadata, open_index
from cctv.semantics import labels_with_confidence
from configs.errors import exit_code_of

DAY = 1772323200.0  # 2026-03-01T00:00:00Z
PER_VIDEO, CAMERAS, DIM = 1000, 8, 512
QUERIES = ["female, upper_colour=red, Backpack, not Hat", "male, lower_colour=blue", "age=old, Bag",
           "upper_colour=black, lower_colour=black, not Backpack", "female, hair=long, eyewear=Sunglasses",
           "Hat, upper_colour=white", "woman in a red top with a backpack, no hat", "man in blue jeans with a bag"]


def native_model() -> ModelInfo:
    import yaml

    ds = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / "native.yaml").read_text())["DATASET"]
    names, groups = list(ds["ATTRS"]), [list(g) for g in ds["GROUPS"]]
    return ModelInfo("b" * 64, "synthetic NATIVE", names, groups, [0.5] * len(names), False, DIM)


def synthetic_probs(rng: np.random.Generator, n: int, m: ModelInfo) -> np.ndarray:
    """Binary attributes ~ Beta(0.5, 1.5); each group: one likely member, the rest small."""
    p = rng.beta(0.5, 1.5, (n, len(m.attr_names)))
    for g in m.groups:
        idx = [m.attr_names.index(a) for a in g[2:]]
        pick = rng.integers(0, len(idx), n)
        p[:, idx] *= 0.2
        p[np.arange(n), np.asarray(idx)[pick]] = rng.uniform(0.3, 0.99, n)
    return p.astype(np.float32)


def synthetic_embeddings(rng: np.random.Generator, n: int, centres: np.ndarray) -> np.ndarray:
    e = centres[rng.integers(0, len(centres), n)] + 0.35 * rng.standard_normal((n, DIM)).astype(np.float32)
    return (e / np.linalg.norm(e, axis=1, keepdims=True)).astype(np.float16)


def video_rows(rng: np.random.Generator, m: ModelInfo, centres: np.ndarray, start: float, thumb: bytes) -> list[dict]:
    probs, embs = synthetic_probs(rng, PER_VIDEO, m), synthetic_embeddings(rng, PER_VIDEO, centres)
    first = np.sort(rng.integers(1, 25 * 3600, PER_VIDEO))
    length = rng.integers(10, 750, PER_VIDEO)
    rows = []
    for k in range(PER_VIDEO):
        a, b = int(first[k]), int(first[k] + length[k])
        rows.append({"track_id": k + 1, "first_frame": a, "last_frame": b, "start_time": start + (a - 1) / 25,
                     "end_time": start + (b - 1) / 25, "duration": (b - a + 1) / 25, "frames_seen": b - a + 1,
                     "boxes": "{}", "labels": json.dumps(labels_with_confidence(probs[k], m.attr_names, m.groups,
                                                                                0.5, False)),
                     "probs": probs[k].tobytes(), "embedding": embs[k].tobytes(), "thumbnail": thumb,
                     "thumb_frame": a})
    return rows


def build(spec: str, size: int, seed: int = 0) -> dict:
    """Ingest ``size`` synthetic tracks into ``spec``; seconds and tracks per second."""
    rng, m = np.random.default_rng(seed), native_model()
    centres = rng.standard_normal((max(1, size // 20), DIM)).astype(np.float32)
    thumb = cv2.imencode(".jpg", rng.integers(0, 255, (64, 32, 3), dtype=np.uint8))[1].tobytes()
    index = open_index(spec, create=True)
    ing = {c: VideoIngestor(index, m, f"cam{c + 1}") for c in range(CAMERAS)}
    spent = 0.0
    for v in range(size // PER_VIDEO):
        cam = v % CAMERAS
        start = DAY + (v // CAMERAS) * 3600.0
        rows = video_rows(rng, m, centres, start, thumb)  # generating is not ingesting: not timed
        t0 = time.perf_counter()
        ing[cam]._replace(Path(f"/synthetic/cam{cam + 1}/{v:06d}.mp4"),
                          _Pending(f"{v:064x}", f"cam{cam + 1}", start, "key"), rows, {"fps": 25.0})
        spent += time.perf_counter() - t0
    index.close()
    return {"ingest_s": round(spent, 2), "ingest_tracks_per_s": round(size / spent, 1)}


def _percentiles(ms: list[float]) -> dict:
    return {"p50_ms": round(float(np.percentile(ms, 50)), 1), "p95_ms": round(float(np.percentile(ms, 95)), 1),
            "n": len(ms)}


def _filters(rng: np.random.Generator, k: int) -> dict:
    if k % 2 == 0:
        return {}
    after = DAY + float(rng.uniform(0, 12)) * 3600
    return {"cameras": [f"cam{int(rng.integers(1, CAMERAS + 1))}"], "after": after, "before": after + 6 * 3600}


def measure(spec: str, n_queries: int, seed: int = 1) -> dict:
    """Load a fresh Searcher, then time attribute and example queries (limit 50)."""
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    searcher = Searcher(open_index(spec))
    searcher.refresh()
    load = time.perf_counter() - t0
    ids = np.concatenate([b.ids for b in searcher.blocks.values()])
    attr, example = [], []
    from cctv.index.commands import stored_example

    for k in range(n_queries):
        req = Request(QUERIES[k % len(QUERIES)], limit=50, **_filters(rng, k))
        t = time.perf_counter()
        searcher.search(req)
        attr.append((time.perf_counter() - t) * 1000)
    for k in range(n_queries):
        vec, model = stored_example(searcher.index, int(rng.choice(ids)))
        req = Request("", limit=50, example=vec, example_model=model, **_filters(rng, k))
        t = time.perf_counter()
        searcher.search(req)
        example.append((time.perf_counter() - t) * 1000)
    return {"tracks": searcher.size, "load_s": round(load, 2), "attribute_query": _percentiles(attr),
            "example_query": _percentiles(example)}


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--out", default="exp_results/benchmarks/index", help="folder of the indexes and results.json")
    p.add_argument("--index", default="", help="a postgresql:// URL instead of <out>/synthetic_<size>.sqlite")
    p.add_argument("--queries", type=int, default=60, help="queries of each kind per size")
    p.add_argument("--reuse", action="store_true", help="query an index already built by an earlier run")
    args = p.parse_args(argv)
    out, rows = Path(args.out), []
    out.mkdir(parents=True, exist_ok=True)
    for size in args.sizes:
        spec = args.index or str(out / f"synthetic_{size}.sqlite")
        built = {} if args.reuse else _fresh(spec) or build(spec, size)
        row = {"size": size, "index": spec.split("@")[-1], **built, **measure(spec, args.queries),
               "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
               "load_avg_1m": round(os.getloadavg()[0], 2)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    (out / "results.json").write_text(json.dumps(rows, indent=1))
    return rows


def _fresh(spec: str) -> dict:
    """Remove an earlier synthetic index at ``spec`` (file, media, or PostgreSQL tables)."""
    if spec.startswith("postgres"):
        index = open_index(spec, create=True)
        metadata.drop_all(index.writer)
        index.close()
    else:
        for suffix in ("", "-wal", "-shm"):
            Path(spec + suffix).unlink(missing_ok=True)
    return {}


if __name__ == "__main__":
    sys.exit(exit_code_of(main))
