"""Retrieval evaluation of a ReID / multi-task model on (query, gallery) splits: embeddings, the
Market-1501-rule metrics of ``tools.evaluation.reid`` and the ranked-list picture."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm
from yacs.config import CfgNode as CN

from dataset import build_data, build_loaders
from dataset.base import PARData
from dataset.build import reid_pairs
from tools.device import Runtime, autocast, gather_arrays
from tools.evaluation.reid import QueryStats, pairwise_distance, reid_query_stats, save_ranked_lists

Embedded = tuple[torch.Tensor, np.ndarray]  # (N, D) float32 embeddings on the device, their dataset rows


@torch.inference_mode()
def embed_loader(model: torch.nn.Module, loader, *, rt: Runtime, desc: str = "embed") -> Embedded:
    """``model.embed`` over ``loader``; under DDP every rank embeds its shard and all of them are gathered."""
    model.eval()
    feats, rows = [], []
    for x, _, idx in tqdm(loader, desc=desc, leave=False, disable=None if rt.is_main else True, mininterval=1.0):
        with autocast(rt.device, rt.amp_dtype):
            feats.append(model.embed(x).float())  # kept on the device: no sync per batch
        rows.append(idx)
    f = torch.cat(feats) if feats else torch.zeros(0, 0, device=rt.device)
    r = torch.cat(rows).numpy() if rows else np.zeros(0, np.int64)
    if rt.distributed:
        f_np, r = gather_arrays(rt, f.cpu().numpy(), r)
        f = torch.from_numpy(f_np).to(rt.device)
    return f, r


QUERIES_FILE = "reid_queries_{which}_{tag}.npz"  # per-query results: best (training) | eval (--mode eval)


def retrieval_stats(cfg: CN, data: PARData, query: Embedded, gallery: Embedded) -> QueryStats:
    """Per-query statistics of a (query, gallery) pair with REID.METRIC / RERANK."""
    (qf, qr), (gf, gr) = query, gallery
    r = cfg.REID
    return reid_query_stats(qf, gf, data.identities[qr], data.identities[gr], q_cams=data.cameras[qr],
                            g_cams=data.cameras[gr], metric=r.METRIC, rerank=r.RERANK, k1=r.RERANK_K1,
                            k2=r.RERANK_K2, lambda_value=r.RERANK_LAMBDA)


def write_query_stats(path: Path, stats: QueryStats, query_rows: np.ndarray, data: PARData) -> Path:
    """The per-query results of one pair, keyed by dataset row (what scripts.summarize_reid pairs runs on)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, rows=np.asarray(query_rows, np.int64), pids=data.identities[query_rows],
                        n_matches=stats.n_matches, first=stats.first, ap=stats.ap, inp=stats.inp)
    return path


def read_query_stats(path: Path) -> tuple[np.ndarray, QueryStats]:
    """What write_query_stats wrote, sorted by dataset row: (rows, QueryStats). Raises KeyError / ValueError /
    OSError on a file that is not one."""
    with np.load(path, allow_pickle=False) as d:
        rows, n, first, ap, inp = (d[k] for k in ("rows", "n_matches", "first", "ap", "inp"))
    if not (len(rows) == len(n) == len(first) == len(ap) == len(inp)):
        raise ValueError("rows, n_matches, first, ap and inp differ in length")
    o = np.argsort(rows, kind="stable")
    return rows[o], QueryStats(n[o], first[o], ap[o], inp[o])


def draw_ranked_lists(path: Path, cfg: CN, data: PARData, query: Embedded, gallery: Embedded) -> Path | None:
    """REID.VIS_QUERIES queries (evenly spread over those of a real identity) with their top-10 gallery
    images, ranked by the REID.METRIC distance (no re-ranking); None when there is nothing to draw."""
    (qf, qr), (gf, gr) = query, gallery
    real = np.flatnonzero(data.identities[qr] > 0)
    n = min(int(cfg.REID.VIS_QUERIES), len(real))
    if n <= 0 or len(gr) == 0:
        return None
    pick = real[np.unique(np.linspace(0, len(real) - 1, n).round().astype(np.int64))]
    dist = pairwise_distance(qf[torch.as_tensor(pick, device=qf.device)], gf, cfg.REID.METRIC).cpu()
    return save_ranked_lists(path, [data.image_paths[i] for i in qr[pick]], [data.image_paths[i] for i in gr], dist,
                             q_pids=data.identities[qr[pick]], g_pids=data.identities[gr],
                             q_cams=data.cameras[qr[pick]], g_cams=data.cameras[gr])


def reid_eval_data(cfg: CN, task: str, size_hw: tuple[int, int]) -> tuple[CN, PARData]:
    """--mode eval of a reid / multitask checkpoint: the dataset at its input size, read for its TASK
    (reid: identities only, whatever attribute file lies beside the images)."""
    cfg = cfg.clone()
    cfg.defrost()
    cfg.TASK = task
    cfg.DATASET.HEIGHT, cfg.DATASET.WIDTH = size_hw
    cfg.freeze()
    data = build_data(cfg)
    return cfg, (data.select_attrs([]) if task == "reid" else data)


def pair_metrics(cfg: CN, data: PARData, model: torch.nn.Module, rt: Runtime,
                 save_dir: Path | None = None) -> dict[str, dict[str, float]]:
    """{"val": metrics, "test": metrics} of ``model`` on the ReID pairs (dataset.build.REID_PAIRS);
    with ``save_dir`` (main rank) each pair's per-query results go to reid_queries_eval_<tag>.npz."""
    pairs = reid_pairs(cfg)
    splits = [s for pair in pairs.values() for s in pair]
    loaders, _ = build_loaders(cfg, data, splits, rt.device, rank=rt.rank, world=rt.world)
    out = {}
    for tag, (q, g) in pairs.items():
        query = embed_loader(model, loaders[q], rt=rt, desc=q)
        stats = retrieval_stats(cfg, data, query, embed_loader(model, loaders[g], rt=rt, desc=g))
        out[tag] = stats.summary()
        if save_dir is not None:
            write_query_stats(save_dir / QUERIES_FILE.format(which="eval", tag=tag), stats, query[1], data)
    return out
