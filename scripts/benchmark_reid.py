"""Speed of the ReID evaluation on synthetic features (not a test).

    uv run python -m scripts.benchmark_reid                       # 3000 x 20000, D = 2048, + re-ranking
    uv run python -m scripts.benchmark_reid --queries 3368 --gallery 19732 --dim 512 --rerank-size 1000 5000

Features are identity centres plus Gaussian noise (750 identities, 6 cameras, 10% junk and 15%
distractors in the gallery), so the ranking work is realistic; printed: query x gallery sizes,
seconds and the metrics. Re-ranking holds a sparse (Q + G)^2 encoding and a (Q, Q + G) Jaccard
matrix (~2 GB at 3k x 20k); ``--rerank-size Q G`` runs it at a smaller size, ``--rerank-size 0 0`` skips it.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from configs.errors import exit_code_of
from tools.evaluation.reid import evaluate_reid


def synthetic(n_query: int, n_gallery: int, dim: int, seed: int = 0):
    """(q_feat, g_feat, q_pids, g_pids, q_cams, g_cams) with Market-like junk (-1) / distractors (0)."""
    rng = np.random.default_rng(seed)
    noise = 2.0 * (dim / 512) ** 0.25  # same difficulty at every dim (separation ~ sqrt(D) / noise^2)
    centres = rng.standard_normal((751, dim)).astype(np.float32)
    q_pids = rng.integers(1, 751, n_query)
    g_pids = rng.integers(1, 751, n_gallery)
    kind = rng.random(n_gallery)
    g_pids[kind < 0.25] = 0
    g_pids[kind < 0.10] = -1
    q_feat = centres[q_pids] + noise * rng.standard_normal((n_query, dim), dtype=np.float32)
    g_feat = centres[np.maximum(g_pids, 0)] + noise * rng.standard_normal((n_gallery, dim), dtype=np.float32)
    other = int((g_pids <= 0).sum())  # junk / distractors: people of their own, seen once
    g_feat[g_pids <= 0] = (rng.standard_normal((other, dim), dtype=np.float32)
                           + noise * rng.standard_normal((other, dim), dtype=np.float32))
    return q_feat, g_feat, q_pids, g_pids, rng.integers(1, 7, n_query), rng.integers(1, 7, n_gallery)


def on_device(data: tuple, device: str) -> tuple:
    """Features as tensors on ``device`` (evaluation runs where they are); ids stay numpy."""
    q, g, *ids = data
    return (torch.from_numpy(q).to(device), torch.from_numpy(g).to(device), *ids)


def timed(label: str, sizes: tuple[int, int], data, **kw) -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t = time.perf_counter()
    q, g, qp, gp, qc, gc = data
    r = evaluate_reid(q, g, qp, gp, q_cams=qc, g_cams=gc, **kw)
    dt = time.perf_counter() - t
    print(f"{label:<28} {sizes[0]:>6} x {sizes[1]:<6} {dt:8.2f} s   rank1 {r['rank1']:.3f}  mAP {r['mAP']:.3f}  "
          f"mINP {r['mINP']:.3f}  valid {r['n_queries_valid']}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=int, default=3000)
    ap.add_argument("--gallery", type=int, default=20000)
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--rerank-size", type=int, nargs=2, default=None, metavar=("Q", "G"),
                    help="re-ranking sizes (default: the same as --queries / --gallery; 0 0 skips it)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--device", default="cpu",
                    help="where the features live: cpu | cuda (re-ranking's sparse steps run on the CPU)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch threads: {torch.get_num_threads()}, feature dim {args.dim}, device {args.device}")
    print(f"{'case':<28} {'query x gallery':>15} {'seconds':>10}")
    sizes = (args.queries, args.gallery)
    data = on_device(synthetic(*sizes, args.dim), args.device)
    timed("cosine", sizes, data, metric="cosine")
    timed("euclidean", sizes, data, metric="euclidean")
    rq, rg = args.rerank_size or sizes
    if rq and rg:
        small = data if (rq, rg) == sizes else on_device(synthetic(rq, rg, args.dim), args.device)
        timed("cosine + k-reciprocal rerank", (rq, rg), small, metric="cosine", rerank=True)


if __name__ == "__main__":
    sys.exit(exit_code_of(main))
