"""Tracks in MOTChallenge text format, and tracking scored against a ground-truth file with py-motmetrics.

A MOT file has one line per frame x box: ``frame,id,x,y,w,h,score,-1,-1,-1`` (frames 1-based, pixels).
Ground truth (MOTChallenge ``gt.txt``: ``frame,id,x,y,w,h,conf,class,visibility``) keeps rows whose conf is
not 0 and whose class is pedestrian (1) or unset (-1 or absent). ``score_tracks`` matches boxes at IoU >= 0.5
and returns MOTA, IDF1, ID switches, recall and precision (all computed by motmetrics) plus recall and
precision by box height, read from motmetrics' own match events. The IoU distance matrices are computed here
(``iou_distance``): motmetrics 1.4's own ``iou_matrix`` calls ``np.asfarray``, which NumPy 2 removed.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from configs.errors import UserError

HEIGHT_BINS = (("<64", 0.0, 64.0), ("64-128", 64.0, 128.0), (">128", 128.0, float("inf")))
PEDESTRIAN_CLASSES = (-1, 1)


class MotFileError(UserError, ValueError):
    """A ground-truth or track file that is missing or malformed; the message names the file and line."""


@dataclass
class MotRows:
    """Boxes of a MOT file: ``frames`` (N,) int 1-based, ``ids`` (N,) int, ``xywh`` (N, 4), ``scores`` (N,)."""

    frames: np.ndarray
    ids: np.ndarray
    xywh: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.frames)

    def frame(self, f: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids, xywh) on frame ``f``."""
        m = self.frames == f
        return self.ids[m], self.xywh[m]


def write_mot(path: str | Path, rows: Iterable[tuple[int, int, Iterable[float], float]]) -> int:
    """Write ``(frame, id, (x1, y1, x2, y2), score)`` rows as ``frame,id,x,y,w,h,score,-1,-1,-1``, sorted by
    frame then id; returns the number of lines."""
    lines = sorted((int(f), int(i), [float(v) for v in box], float(s)) for f, i, box, s in rows)
    with open(path, "w", encoding="utf-8") as out:
        for f, i, (x1, y1, x2, y2), s in lines:
            out.write(f"{f},{i},{x1:.2f},{y1:.2f},{x2 - x1:.2f},{y2 - y1:.2f},{s:.4f},-1,-1,-1\n")
    return len(lines)


def _parse_line(line: str, where: str) -> list[float]:
    parts = line.replace(",", " ").split()
    if len(parts) < 6:
        raise MotFileError(f"{where}: expected 'frame,id,x,y,w,h[,conf,class,visibility]', got {line[:80]!r}")
    try:
        vals = [float(v) for v in parts[:9]]
    except ValueError:
        raise MotFileError(f"{where}: expected numbers 'frame,id,x,y,w,h,...', got {line[:80]!r}") from None
    if vals[0] < 1 or vals[0] != int(vals[0]):
        raise MotFileError(f"{where}: the frame number must be an integer >= 1 (1-based), got {parts[0]!r}")
    return vals + [1.0, -1.0, -1.0][len(vals) - 6:] if len(vals) < 9 else vals


def read_mot(path: str | Path, ground_truth: bool = False) -> MotRows:
    """A MOT file's boxes; ``ground_truth``: only rows with conf != 0 and a pedestrian class (1, or -1 = unset).
    ``MotFileError`` for a missing file or a malformed line."""
    p = Path(path)
    if not str(path) or not p.is_file():
        raise MotFileError(f"MOT file '{path}' not found; give a MOTChallenge text file (frame,id,x,y,w,h,...)")
    rows = []
    with open(p, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip() and not line.lstrip().startswith("#"):
                rows.append(_parse_line(line.strip(), f"{p}:{n}"))
    a = np.asarray(rows, np.float64).reshape(-1, 9)
    if ground_truth:
        a = a[(a[:, 6] != 0) & np.isin(a[:, 7], PEDESTRIAN_CLASSES)]
    a = a[(a[:, 4] > 0) & (a[:, 5] > 0)]
    return MotRows(a[:, 0].astype(int), a[:, 1].astype(int), a[:, 2:6].copy(), a[:, 6].copy())


def iou_distance(gt_xywh: np.ndarray, hyp_xywh: np.ndarray, min_iou: float = 0.5) -> np.ndarray:
    """(G, H) 1 - IoU, NaN where IoU < ``min_iou`` (motmetrics' "no match" marker)."""
    g, h = np.asarray(gt_xywh, float).reshape(-1, 4), np.asarray(hyp_xywh, float).reshape(-1, 4)
    g2, h2 = g[:, None, :2] + g[:, None, 2:], h[None, :, :2] + h[None, :, 2:]
    inter = (np.minimum(g2, h2) - np.maximum(g[:, None, :2], h[None, :, :2])).clip(0).prod(-1)
    union = g[:, None, 2:].prod(-1) + h[None, :, 2:].prod(-1) - inter
    iou = inter / np.maximum(union, 1e-12)
    return np.where(iou >= min_iou, 1.0 - iou, np.nan)


def accumulate(gt: MotRows, hyp: MotRows, n_frames: int, min_iou: float = 0.5) -> Any:
    """A motmetrics accumulator over frames 1..``n_frames`` (a frame with no box of either side counts too)."""
    import motmetrics as mm

    acc = mm.MOTAccumulator(auto_id=False)
    for f in range(1, n_frames + 1):
        (gi, gb), (hi, hb) = gt.frame(f), hyp.frame(f)
        acc.update(gi.tolist(), hi.tolist(), iou_distance(gb, hb, min_iou), frameid=f)
    return acc


def _by_height(acc: Any, gt: MotRows, hyp: MotRows) -> dict:
    """Recall (by ground-truth box height) and precision (by hypothesis height) per HEIGHT_BINS bin, from the
    accumulator's MATCH / SWITCH events."""
    ev = acc.mot_events
    hit = ev[ev.Type.isin(["MATCH", "SWITCH"])]
    gh = {(int(f), int(i)): h for f, i, h in zip(gt.frames, gt.ids, gt.xywh[:, 3])}
    hh = {(int(f), int(i)): h for f, i, h in zip(hyp.frames, hyp.ids, hyp.xywh[:, 3])}
    frames = hit.index.get_level_values(0)
    g_hit = [gh[(int(f), int(o))] for f, o in zip(frames, hit.OId)]
    h_hit = [hh[(int(f), int(o))] for f, o in zip(frames, hit.HId)]
    out = {}
    for name, lo, hi in HEIGHT_BINS:
        n_gt = int(((gt.xywh[:, 3] >= lo) & (gt.xywh[:, 3] < hi)).sum())
        n_hyp = int(((hyp.xywh[:, 3] >= lo) & (hyp.xywh[:, 3] < hi)).sum())
        tp_g = sum(lo <= h < hi for h in g_hit)
        tp_h = sum(lo <= h < hi for h in h_hit)
        out[name] = {"gt": n_gt, "recall": tp_g / n_gt if n_gt else None,
                     "hyp": n_hyp, "precision": tp_h / n_hyp if n_hyp else None}
    return out


METRICS = ("recall", "precision", "mota", "idf1", "num_switches", "num_false_positives", "num_misses",
           "num_objects", "num_predictions", "num_unique_objects", "mostly_tracked", "mostly_lost")


def score_tracks(gt: MotRows, hyp: MotRows, n_frames: int | None = None, min_iou: float = 0.5) -> dict:
    """MOT metrics of ``hyp`` against ``gt`` over frames 1..n_frames (default: the last frame of either):
    the motmetrics values of METRICS (switches etc. as ints) and ``by_height``."""
    import motmetrics as mm

    last = int(max(gt.frames.max(initial=0), hyp.frames.max(initial=0)))
    acc = accumulate(gt, hyp, n_frames or last, min_iou)
    row = mm.metrics.create().compute(acc, metrics=list(METRICS), name="all").iloc[0]
    out = {k: (int(row[k]) if k.startswith(("num_", "mostly_")) else float(row[k])) for k in METRICS}
    out["by_height"] = _by_height(acc, gt, hyp)
    return out


def detection_rows(per_frame: dict[int, np.ndarray]) -> MotRows:
    """Raw detector boxes ``{frame: (N, 4) x1, y1, x2, y2}`` as MotRows, each box its own id."""
    frames, boxes = [], []
    for f, b in sorted(per_frame.items()):
        b = np.asarray(b, float).reshape(-1, 4)
        frames += [f] * len(b)
        boxes.append(np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], 1))
    xywh = np.concatenate(boxes) if boxes else np.zeros((0, 4))
    n = len(frames)
    return MotRows(np.asarray(frames, int), np.arange(1, n + 1), xywh, np.ones(n))


def score_detections(gt: MotRows, per_frame: dict[int, np.ndarray], min_iou: float = 0.5) -> dict:
    """Detector recall / precision (overall and by height) on the frames it ran on (``per_frame``'s keys)."""
    on = np.isin(gt.frames, list(per_frame))
    gt_on = MotRows(gt.frames[on], gt.ids[on], gt.xywh[on], gt.scores[on])
    hyp = detection_rows(per_frame)
    frames = sorted(per_frame)
    remap = {f: k for k, f in enumerate(frames, 1)}  # only the detected frames, renumbered 1..K
    g = MotRows(np.array([remap[f] for f in gt_on.frames], int), gt_on.ids, gt_on.xywh, gt_on.scores)
    h = MotRows(np.array([remap[f] for f in hyp.frames], int), hyp.ids, hyp.xywh, hyp.scores)  # per_frame's own
    s = score_tracks(g, h, len(frames), min_iou)
    return {"recall": s["recall"], "precision": s["precision"], "by_height": s["by_height"], "frames": len(frames)}
