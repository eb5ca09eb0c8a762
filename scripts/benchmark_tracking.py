"""Detection and tracking scored against ground truth: runs the video pipeline on one clip, then prints
detector and track recall / precision at IoU 0.5 (overall and by box height), MOTA, IDF1, ID switches
(py-motmetrics) and fps per stage, with the settings used and the machine's load.

    uv run python -m scripts.benchmark_tracking --config-file configs/native_lite0.yaml \
        --video ../shared/videos/mot/TUD-Stadtmitte/TUD-Stadtmitte.mp4 \
        --gt ../shared/videos/mot/TUD-Stadtmitte/gt.txt TEST.PRETRAINED_WEIGHTS lite0.pth [KEY VALUE ...]

Without ``--gt`` only counts and speed are printed (clips with no ground truth). Trailing ``KEY VALUE``
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

SETTINGS = ("DETECTOR", "SSD_SCORE", "SSD_NMS", "SSD_TILES", "SSD_SCALES", "SSD_SMALL_SCALE", "SSD_SMALL_BELOW", "DETECT_EVERY", "DETECT_HZ",
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


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True)
    p.add_argument("--video", required=True)
    p.add_argument("--gt", default="", help="MOTChallenge gt.txt of the clip (frame,id,x,y,w,h,conf,class,vis)")
    p.add_argument("--out", default="exp_results/benchmark_tracking", help="folder of the run's outputs")
    p.add_argument("--json", default="", help="also write the figures to this JSON file")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = p.parse_args(argv)
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
    if hasattr(det.inner, "scales"):
        result["ssd_input_at_end"] = list(det.inner.scales)
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
