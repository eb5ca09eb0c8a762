"""How well an appearance embedding tells people apart on a clip with MOTChallenge ground truth: the crops of the
ground-truth boxes (every ``--every``-th frame) are embedded by the colour histograms of ``TEST.TRACK_APPEARANCE``
(``cctv.appearance``) and by each ``--checkpoint`` (a reid / multitask model's embedding, a PAR model's pooled
backbone features); over pairs of crops at least ``--min-gap`` frames apart it prints the ROC AUC of "same
person" against the similarity, for all pairs and for pairs of boxes that overlap no other box (the ones the
tracker's appearance memory uses), and the median same-person / 95th-percentile other-person similarity.

    uv run python -m scripts.benchmark_appearance --video ../shared/videos/mot/TUD-Stadtmitte/TUD-Stadtmitte.mp4 \\
        --gt ../shared/videos/mot/TUD-Stadtmitte/gt.txt --checkpoint exp_results/NATIVE/lite0_native/best_model.pth
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from scipy.stats import rankdata

from cctv.appearance import colour_embedding, iou_matrix, similarity
from cctv.detections import DetectorError
from cctv.mot import read_mot
from configs.errors import UserError, exit_code_of


def roc_auc(same: np.ndarray, score: np.ndarray) -> float:
    """Probability that a same-person pair scores above an other-person pair (ties count half)."""
    same = np.asarray(same, bool)
    n1, n0 = int(same.sum()), int((~same).sum())
    if not n1 or not n0:
        return float("nan")
    r = rankdata(score)
    return float((r[same].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def gt_crops(video: str, gt_path: str, every: int) -> tuple[list, np.ndarray, np.ndarray, np.ndarray, list]:
    """(RGB crops, ids, frames, clean flags, colour embeddings) of the ground-truth boxes on every ``every``-th
    frame; a box is clean when it overlaps no other ground-truth box of its frame."""
    gt = read_mot(gt_path, ground_truth=True)
    cap = cv2.VideoCapture(video)
    if not cap.isOpened():
        raise DetectorError(f"cannot open video '{video}'; give a readable video file")
    crops, ids, frames, clean, colours = [], [], [], [], []
    n = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        n += 1
        sel = gt.frames == n
        if n % every or not sel.any():
            continue
        xyxy = gt.xywh[sel].copy()
        xyxy[:, 2:] += xyxy[:, :2]
        overlap = iou_matrix(xyxy, xyxy)
        np.fill_diagonal(overlap, 0.0)
        h, w = frame.shape[:2]
        for k, (pid, box) in enumerate(zip(gt.ids[sel], xyxy)):
            x1, y1 = max(0, int(box[0])), max(0, int(box[1]))
            x2, y2 = min(w, int(box[2])), min(h, int(box[3]))
            colour = colour_embedding(frame, box)
            if x2 - x1 < 4 or y2 - y1 < 8 or colour is None:
                continue
            crops.append(cv2.cvtColor(frame[y1:y2, x1:x2], cv2.COLOR_BGR2RGB))
            ids.append(int(pid))
            frames.append(n)
            clean.append(overlap[k].max(initial=0.0) <= 0.0)
            colours.append(colour)
    cap.release()
    return crops, np.asarray(ids), np.asarray(frames), np.asarray(clean, bool), colours


def pair_table(name: str, sim: np.ndarray, ids: np.ndarray, frames: np.ndarray, clean: np.ndarray,
               min_gap: int) -> list[str]:
    """Rows of the separability table for one (N, N) similarity matrix."""
    iu = np.triu_indices(len(ids), 1)
    far = np.abs(frames[:, None] - frames[None])[iu] >= min_gap
    same = (ids[:, None] == ids[None])[iu]
    both_clean = (clean[:, None] & clean[None])[iu]
    rows = []
    for sel, what in ((far, "all"), (far & both_clean, "clean")):
        s, y = sim[iu][sel], same[sel]
        rows.append(f"| {name} | {what} | {y.sum()} / {(~y).sum()} | {roc_auc(y, s):.3f} | "
                    f"{np.median(s[y]) if y.any() else float('nan'):.3f} | "
                    f"{np.percentile(s[~y], 95) if (~y).any() else float('nan'):.3f} |")
    return rows


def network_similarity(checkpoint: str) -> Callable[[list], np.ndarray]:
    from tools.inference import Predictor

    predictor = Predictor.from_checkpoint(checkpoint, device="cpu")

    def sim(crops: list) -> np.ndarray:
        f = predictor.appearance_features(crops)
        f /= np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
        return f @ f.T

    return sim


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--video", required=True)
    p.add_argument("--gt", required=True, help="MOTChallenge gt.txt of the clip")
    p.add_argument("--checkpoint", action="append", default=[], help="a checkpoint whose features to compare "
                   "(repeatable)")
    p.add_argument("--every", type=int, default=5, help="use every N-th frame's boxes (default 5)")
    p.add_argument("--min-gap", type=int, default=10, help="pairs at least this many frames apart (default 10)")
    args = p.parse_args(argv)
    for c in args.checkpoint:
        if not Path(c).is_file():
            raise UserError(f"--checkpoint '{c}' not found; give a checkpoint file (best_model.pth)")
    crops, ids, frames, clean, colours = gt_crops(args.video, args.gt, max(1, args.every))
    print(f"{args.video}: {len(crops)} ground-truth crops of {len(set(ids.tolist()))} people, "
          f"{int(clean.sum())} clean; pairs >= {args.min_gap} frames apart")
    print("| embedding | pairs | same / other | ROC AUC | median same | 95th pct other |")
    print("| --- | --- | --- | --- | --- | --- |")
    col = np.array([[similarity(a, b) for b in colours] for a in colours])
    for row in pair_table("colour histograms (Bhattacharyya)", col, ids, frames, clean, args.min_gap):
        print(row)
    for c in args.checkpoint:
        for row in pair_table(f"{c} (cosine)", network_similarity(c)(crops), ids, frames, clean, args.min_gap):
            print(row)
    return 0


if __name__ == "__main__":
    sys.exit(exit_code_of(main))
