"""Detection and tracking scored against ground truth: runs the video pipeline on one clip, then prints
detector and track recall / precision at IoU 0.5 (overall and by box height), MOTA, IDF1, ID switches
(py-motmetrics) and fps per stage, with the settings used and the machine's load.

    uv run python -m scripts.benchmark_tracking --config-file configs/native_lite0.yaml \
        --video ../shared/videos/mot/TUD-Stadtmitte/TUD-Stadtmitte.mp4 \
        --gt ../shared/videos/mot/TUD-Stadtmitte/gt.txt TEST.PRETRAINED_WEIGHTS lite0.pth [KEY VALUE ...]

Without ``--gt`` only counts and speed are printed (clips with no ground truth). ``--mosaic K`` scores a proxy
for a scene of small people instead: K x K copies of the clip at 1/K size in one frame (``--mosaic-offset``
frames apart, the ground truth scaled and its ids kept apart per tile), written to ``--out``. Trailing ``KEY VALUE``
pairs override the config (e.g. ``TEST.DETECTOR hog``). Outputs of the run go to ``--out``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from cctv.detections import Detections
from cctv.mot import read_mot, score_detections, score_tracks
from configs.errors import exit_code_of

SETTINGS = ("DETECTOR", "SSD_SCORE", "SSD_NMS", "SSD_TILES", "SSD_SCALES", "SSD_SMALL_SCALE", "SSD_SMALL_BELOW", "SSD_MIN_ASPECT", "DETECT_EVERY", "DETECT_HZ",
            "YOLO_CONF", "TRACK_HIGH_SCORE", "TRACK_MATCH_THRESH", "TRACK_LOST_SECONDS", "TRACK_GAP_SECONDS",
            "TRACK_APPEARANCE", "MIN_TRACK_FRAMES",
            "STATIC_FILTER", "ZONES", "CHECK_PER_FRAME", "PAR_RUNTIME")


class RecordingDetector:
    """Wraps a detector and keeps its boxes per frame (scored as the detector's own recall / precision)."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.name, self.boxes = inner, inner.name, {}

    def __call__(self, frame: np.ndarray, frame_index: int) -> Detections:
        d = self.inner(frame, frame_index)
        self.boxes[frame_index] = np.asarray(d.xyxy, float).reshape(-1, 4)
        return d

    @property
    def every_factor(self) -> int:
        return getattr(self.inner, "every_factor", 1)

    @property
    def scales(self) -> list:
        return list(getattr(self.inner, "scales", []))


def _load() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def _fmt(v: Any) -> str:
    return "-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))


def _print_scores(title: str, s: dict) -> None:
    line = f"{title}: recall {_fmt(s['recall'])} precision {_fmt(s['precision'])}"
    if "mota" in s:
        line += (f" | MOTA {_fmt(s['mota'])} IDF1 {_fmt(s['idf1'])} ID switches {s['num_switches']}"
                 f" | FP {s['num_false_positives']} misses {s['num_misses']} | gt ids {s['num_unique_objects']},"
                 f" mostly tracked {s['mostly_tracked']}, mostly lost {s['mostly_lost']}")
    print(line)
    print("   by height: " + " | ".join(
        f"{k} px: recall {_fmt(v['recall'])} ({v['gt']} gt), precision {_fmt(v['precision'])} ({v['hyp']} boxes)"
        for k, v in s["by_height"].items()))


def _run(args: argparse.Namespace) -> tuple[dict, RecordingDetector, Any]:
    from cctv.pipeline import VideoOptions, process_video
    from configs.loader import load_config
    from tools.inference import Predictor
    from tools.inference.onnx import runtime_predictor

    cfg = load_config(args.config_file, args.opts)
    opts = VideoOptions.from_cfg(cfg)
    opts.validate()
    det = RecordingDetector(opts.make_detector(Path(args.video)))
    predictor = runtime_predictor(Predictor.from_cfg(cfg), cfg.TEST.PAR_RUNTIME)
    summary = process_video(args.video, predictor, opts, args.out, detector=det)
    return summary, det, cfg


def make_mosaic(video: str, gt_path: str, out_dir: Path, k: int = 2, offset: int = 20) -> tuple[str, str]:
    """(video, gt.txt) of a K x K mosaic of ``video`` at 1/K size, tile q showing frame t + q * ``offset``."""
    import cv2

    from cctv.detections import DetectorError

    gt = read_mot(gt_path, ground_truth=True)
    cap = cv2.VideoCapture(video)
    if not cap.isOpened():
        raise DetectorError(f"cannot open video '{video}'; give a readable video file")
    fps, frames = cap.get(cv2.CAP_PROP_FPS) or 25.0, []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    n = len(frames) - (k * k - 1) * offset
    if k < 2 or offset < 0 or n < 10:
        raise DetectorError(f"--mosaic {k} --mosaic-offset {offset}: needs K >= 2, an offset >= 0 and a clip of at "
                            f"least (K*K - 1) * offset + 10 frames ({len(frames)} read)")
    h, w = frames[0].shape[:2]
    th, tw = h // k, w // k
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{Path(video).stem}_mosaic{k}"
    writer = cv2.VideoWriter(str(out_dir / f"{stem}.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), fps, (tw * k, th * k))
    id_step, rows = int(gt.ids.max()) + 1 if len(gt) else 1, []
    for t in range(n):
        canvas = np.zeros((th * k, tw * k, 3), np.uint8)
        for q in range(k * k):
            x0, y0, src = (q % k) * tw, (q // k) * th, t + q * offset
            canvas[y0:y0 + th, x0:x0 + tw] = cv2.resize(frames[src], (tw, th), interpolation=cv2.INTER_AREA)
            sel = gt.frames == src + 1
            for pid, (x, y, bw, bh) in zip(gt.ids[sel], gt.xywh[sel]):  # clipped to the frame = to the tile
                bx1, by1 = max(0.0, x) * tw / w + x0, max(0.0, y) * th / h + y0
                bx2, by2 = min(float(w), x + bw) * tw / w + x0, min(float(h), y + bh) * th / h + y0
                if bx2 - bx1 >= 1 and by2 - by1 >= 1:
                    rows.append(f"{t + 1},{pid + q * id_step},{bx1:.2f},{by1:.2f},{bx2 - bx1:.2f},{by2 - by1:.2f},1,1,1")
        writer.write(canvas)
    writer.release()
    (out_dir / f"{stem}_gt.txt").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return str(out_dir / f"{stem}.mp4"), str(out_dir / f"{stem}_gt.txt")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True)
    p.add_argument("--video", required=True)
    p.add_argument("--gt", default="", help="MOTChallenge gt.txt of the clip (frame,id,x,y,w,h,conf,class,vis)")
    p.add_argument("--out", default="exp_results/benchmark_tracking", help="folder of the run's outputs")
    p.add_argument("--json", default="", help="also write the figures to this JSON file")
    p.add_argument("--mosaic", type=int, default=0, help="score a K x K mosaic of the clip at 1/K size instead "
                   "(a proxy for small people; needs --gt)")
    p.add_argument("--mosaic-offset", type=int, default=20, help="frames between the mosaic's tiles (default 20)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = p.parse_args(argv)
    if args.mosaic:
        if not args.gt:
            p.error("--mosaic needs --gt (the mosaic's ground truth is made from it)")
        args.video, args.gt = make_mosaic(args.video, args.gt, Path(args.out), args.mosaic, args.mosaic_offset)
    gt = read_mot(args.gt, ground_truth=True) if args.gt else None  # a bad file fails before the run
    load_before = _load()
    t0 = time.perf_counter()
    summary, det, cfg = _run(args)
    result = {"video": args.video, "gt": args.gt, "settings": {k: cfg.TEST[k] for k in SETTINGS if k in cfg.TEST},
              "load_before": load_before, "load_after": _load(), "seconds": round(time.perf_counter() - t0, 1),
              "frames": summary["frames"], "status": summary["status"], "people_tracked": summary["people_tracked"],
              "fps": summary["fps"], "fps_after_warmup": summary["fps_after_warmup"],
              "cpu_ms_per_frame": summary.get("cpu_ms_per_frame")}
    print(f"{args.video}: {summary['frames']} frames [{summary['status']}], {summary['people_tracked']} tracks "
          f"reported; load average {load_before} -> {result['load_after']} (1, 5, 15 min)")
    print("settings: " + ", ".join(f"TEST.{k} {v}" for k, v in result["settings"].items()))
    if det.scales:
        result["ssd_input_at_end"] = det.scales
        print(f"ssdlite input at the end of the clip: {result['ssd_input_at_end']} px, detector frames "
              f"{len(det.boxes)} of {summary['frames']}")
    f = summary["fps_after_warmup"] or summary["fps"]
    print("fps after warm-up: " + " | ".join(f"{k} {_fmt(v)}" for k, v in f.items())
          + f" | CPU ms per frame (all threads) {_fmt(result['cpu_ms_per_frame'])}")
    if gt is not None:
        hyp = read_mot(summary["outputs"]["mot"])
        result["detector"] = score_detections(gt, det.boxes)
        result["tracks"] = score_tracks(gt, hyp, summary["frames"])
        _print_scores(f"detector ({result['detector']['frames']} frames it ran on)", result["detector"])
        _print_scores("tracks (the _mot.txt output, every frame)", result["tracks"])
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1, default=str), encoding="utf-8")
    return result


if __name__ == "__main__":
    sys.exit(exit_code_of(main))
