"""Video -> detect -> track -> PAR every N frames -> smoothed labels -> annotated mp4 + JSON + CSV.

Outputs in ``out_dir`` for ``<stem>.<ext>`` (frame numbers are 1-based, as in MOT files):
``<stem>_annotated.mp4``, ``<stem>_tracks.json`` (per track: frames, boxes, mean probability per
attribute, decoded labels, best-crop thumbnails in ``<stem>_thumbs/``; plus the run summary),
``<stem>_frames.csv`` (one row per frame x tracked person), ``<stem>_mot.txt`` (the reported tracks in
MOTChallenge format, for ``scripts.benchmark_tracking``) and ``<stem>_report/index.html`` (a static,
filterable page of the tracks). The CSV is flushed every frame and the JSON is written even when the run stops
early (Ctrl-C, an error), marked ``"complete": false``.
"""
from __future__ import annotations

import csv
import json
import logging
import math
import os
import queue
import re
import threading
import time
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Protocol, Sequence

import cv2
import numpy as np
from tqdm import tqdm

from configs.errors import UserError
from configs.preflight import is_stream, video_source_problem
from tools.inference.labels import LabelDecoder
from cctv.detections import Detections
from cctv.detectors import Detector, build_detector
from cctv.filters import PERSON_SHAPE_MIN, ZoneFilter, has_moved, interpolate_gaps, parse_zones, person_shape_score
from cctv.mot import write_mot
from cctv.smoothing import make_smoother
from cctv.tracking import ByteTracker

log = logging.getLogger(__name__)

VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".mpg", ".mpeg", ".wmv", ".webm", ".ts", ".flv")
CSV_FIXED = ["frame", "track_id", "x1", "y1", "x2", "y2", "det_score", "classified", "labels"]
DEFAULT_FPS = 25.0  # when the container does not say
THUMB_HEIGHT = 192  # best-crop thumbnail per track: at most this tall


class VideoError(UserError, ValueError):
    """A video that cannot be processed; the message names the file and what to do."""


class PredictorLike(Protocol):
    attr_names: list[str]
    groups: list

    def predict_images(self, images: list[np.ndarray]) -> np.ndarray: ...


@dataclass
class VideoOptions:
    """The TEST.* settings the pipeline uses (``from_cfg`` reads them from a config)."""

    detector: str = "auto"
    det_file: str = ""  # a MOT file, or a folder holding <video stem>.txt
    yolo_model: str = ""
    conf: float = 0.4  # TEST.YOLO_CONF: detector score threshold (ByteTrack's high threshold)
    hog_scale: float = 1.05
    check_per_frame: int = 1  # TEST.CHECK_PER_FRAME (the shipped config: 3)
    detect_every: int = 0  # TEST.DETECT_EVERY: run the detector on every N-th frame, hold the tracks in between
    detect_hz: float = 8.0  # TEST.DETECT_HZ: with DETECT_EVERY 0, N = round(video fps / this), at least ...
    detect_every_min: int = 1  # TEST.DETECT_EVERY_MIN: ... this (the shipped config: 2, the 2-core CPU budget)
    smoothing: str = "ema"
    ema_alpha: float = 0.3
    window: int = 15
    min_box_height: int = 48
    min_box_width: int = 16
    max_frames: int = 0
    threshold: float = 0.5  # METRIC.THRESHOLD
    device: str | None = None  # for the YOLO detector
    ssd_score: float = 0.1  # TEST.SSD_SCORE, TEST.SSD_NMS, TEST.SSD_TILES, TEST.SSD_TILE_OVERLAP (ssdlite)
    ssd_nms: float = 0.45
    ssd_tiles: int = 0
    ssd_tile_overlap: float = 0.25
    ssd_scales: tuple = (384,)  # TEST.SSD_SCALES: network input sizes (300 = 300x300 squash)
    ssd_small_scale: int = 0  # TEST.SSD_SMALL_SCALE, TEST.SSD_SMALL_BELOW: the input of clips of small people
    ssd_small_below: float = 0.3
    ssd_min_aspect: float = 1.2  # TEST.SSD_MIN_ASPECT: person boxes are at least this much taller than wide
    track_high: float = 0.3  # TEST.TRACK_HIGH_SCORE: ByteTrack's high-score threshold
    track_match: float = 0.95  # TEST.TRACK_MATCH_THRESH, TEST.TRACK_LOST_SECONDS (ByteTrack)
    track_lost_seconds: float = 2.0
    track_gap_seconds: float = 1.0  # TEST.TRACK_GAP_SECONDS: gaps of reported tracks filled in the MOT file
    min_track_frames: int = 5  # TEST.MIN_TRACK_FRAMES: a track is drawn and reported from its N-th frame on
    track_appearance: bool = False  # TEST.TRACK_APPEARANCE: colour re-link and swap repair (cctv.appearance)
    static_filter: bool = True  # TEST.STATIC_FILTER: never-moving, not person-shaped tracks are not reported
    zones: list = field(default_factory=list)  # TEST.ZONES: include / exclude polygons
    report: bool = True  # TEST.REPORT: <stem>_report/index.html
    max_label_lines: int = 5
    write_video: bool = True
    overlap: bool = True  # TEST.OVERLAP: detect the next frames in a worker thread while PAR runs
    progress: bool = True

    @classmethod
    def from_cfg(cls, cfg: Any) -> "VideoOptions":
        t = cfg.TEST
        return cls(detector=t.DETECTOR, det_file=t.DET_FILE, yolo_model=t.YOLO_MODEL, conf=t.YOLO_CONF,
                   hog_scale=t.HOG_SCALE, check_per_frame=t.CHECK_PER_FRAME, smoothing=t.SMOOTHING,
                   ema_alpha=t.EMA_ALPHA, window=t.WINDOW, min_box_height=t.MIN_BOX_HEIGHT,
                   min_box_width=t.MIN_BOX_WIDTH, max_frames=t.MAX_FRAMES, threshold=cfg.METRIC.THRESHOLD,
                   device=None if cfg.DEVICE == "auto" else cfg.DEVICE, ssd_score=t.SSD_SCORE, ssd_nms=t.SSD_NMS,
                   ssd_tiles=t.SSD_TILES, ssd_tile_overlap=t.SSD_TILE_OVERLAP, report=t.REPORT,
                   overlap=t.OVERLAP, detect_every=t.DETECT_EVERY, track_match=t.TRACK_MATCH_THRESH,
                   track_lost_seconds=t.TRACK_LOST_SECONDS, **cls._new_keys(t))

    @staticmethod
    def _new_keys(t: Any) -> dict:
        return {"ssd_scales": tuple(t.SSD_SCALES), "ssd_small_scale": t.SSD_SMALL_SCALE,
                "ssd_small_below": t.SSD_SMALL_BELOW, "ssd_min_aspect": t.SSD_MIN_ASPECT,
                "track_high": t.TRACK_HIGH_SCORE, "detect_hz": t.DETECT_HZ, "detect_every_min": t.DETECT_EVERY_MIN,
                "track_gap_seconds": t.TRACK_GAP_SECONDS, "min_track_frames": t.MIN_TRACK_FRAMES,
                "static_filter": t.STATIC_FILTER, "zones": list(t.ZONES), "track_appearance": t.TRACK_APPEARANCE}

    def validate(self) -> None:
        if self.check_per_frame < 1:
            raise ValueError(f"TEST.CHECK_PER_FRAME must be >= 1, got {self.check_per_frame}")
        if self.detect_every_min < 1:
            raise ValueError(f"TEST.DETECT_EVERY_MIN must be >= 1 (1 = a slow clip may be detected on every frame), "
                             f"got {self.detect_every_min}")
        if self.detect_every < 0 or (self.detect_every == 0 and self.detect_hz <= 0):
            raise ValueError(f"TEST.DETECT_EVERY must be >= 1 (1 = every frame) or 0 (from TEST.DETECT_HZ > 0), "
                             f"got {self.detect_every} and {self.detect_hz}")
        if self.min_track_frames < 1 or self.track_gap_seconds < 0 or not 0.0 < self.track_high < 1.0:
            raise ValueError(f"TEST.MIN_TRACK_FRAMES must be >= 1, TEST.TRACK_GAP_SECONDS >= 0 and "
                             f"TEST.TRACK_HIGH_SCORE in (0, 1); got {self.min_track_frames}, "
                             f"{self.track_gap_seconds} and {self.track_high}")
        parse_zones(self.zones)  # ZoneError on a malformed polygon
        if not 0.0 < self.track_match <= 1.0:
            raise ValueError(f"TEST.TRACK_MATCH_THRESH must be in (0, 1] (1 - IoU x score), got {self.track_match}")
        if self.track_lost_seconds <= 0:
            raise ValueError(f"TEST.TRACK_LOST_SECONDS must be > 0, got {self.track_lost_seconds}")
        if self.max_frames < 0:
            raise ValueError(f"TEST.MAX_FRAMES must be >= 0 (0 = whole video), got {self.max_frames}")
        make_smoother(self.smoothing, self.ema_alpha, self.window)  # raises on bad values

    def make_detector(self, video: Path | None = None) -> Detector:
        """The configured detector (``video`` names the MOT file when TEST.DET_FILE is a folder)."""
        det_file = Path(self.det_file) if self.det_file else Path("")
        if self.det_file and det_file.is_dir() and video is not None:  # one MOT file per video, named after it
            det_file = det_file / f"{video.stem}.txt"
        ssd = {"score": self.ssd_score, "nms_iou": self.ssd_nms, "tiles": self.ssd_tiles,
               "tile_overlap": self.ssd_tile_overlap, "scales": self.ssd_scales,
               "small_scale": self.ssd_small_scale, "small_below": self.ssd_small_below,
               "min_aspect": self.ssd_min_aspect}
        return build_detector(self.detector, det_file=det_file if self.det_file else "", yolo_model=self.yolo_model,
                              yolo_conf=self.conf, hog_scale=self.hog_scale, device=self.device, ssd=ssd)


@dataclass
class TrackRecord:
    """Everything kept about one track id."""

    track_id: int
    smoother: Any
    frames: list[int] = field(default_factory=list)
    boxes: list[list[int]] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    n_classified: int = 0
    prob_sum: np.ndarray | None = None
    emb_sum: np.ndarray | None = None  # sum of unit appearance embeddings (reid / multitask checkpoints)
    thumb: np.ndarray | None = None  # best classified crop so far (BGR), see offer_thumb
    thumb_quality: float = -1.0
    thumb_frame: int | None = None
    thumb_path: str | None = None  # relative to the JSON's folder, once saved
    moved: bool = False  # the box centre has left its first position (cctv.filters.has_moved)
    shape: float = float("-inf")  # best HOG person-shape margin while it had not moved
    shape_frame: int = -10**9  # frame of the last shape check

    def is_static_object(self) -> bool:
        """Never moved and never looked like a person (TEST.STATIC_FILTER)."""
        return not self.moved and self.shape < PERSON_SHAPE_MIN

    def observe(self, probs: np.ndarray, embedding: np.ndarray | None = None) -> None:
        p = np.asarray(probs, np.float64)
        self.prob_sum = p.copy() if self.prob_sum is None else self.prob_sum + p
        self.n_classified += 1
        self.smoother.update(p)
        if embedding is not None:  # unit length first: every crop weighs the same in the track's mean
            e = np.asarray(embedding, np.float64)
            e = e / max(float(np.linalg.norm(e)), 1e-12)
            self.emb_sum = e if self.emb_sum is None else self.emb_sum + e

    @property
    def embedding(self) -> np.ndarray | None:
        """The unit-length mean of the crops' unit embeddings (reid / multitask checkpoints), else None."""
        if self.emb_sum is None:
            return None
        return self.emb_sum / max(float(np.linalg.norm(self.emb_sum)), 1e-12)

    def offer_thumb(self, frame: np.ndarray, box: list[int], score: float, frame_index: int) -> None:
        """Keep the crop with the best detection score x height (capped at 256 px): confident and large."""
        x1, y1, x2, y2 = box
        quality = float(score) * min(y2 - y1, 256)
        if quality > self.thumb_quality and y2 > y1 and x2 > x1:
            crop = frame[y1:y2, x1:x2]
            if crop.shape[0] > THUMB_HEIGHT:
                w = max(1, round(crop.shape[1] * THUMB_HEIGHT / crop.shape[0]))
                crop = cv2.resize(crop, (w, THUMB_HEIGHT), interpolation=cv2.INTER_AREA)
            self.thumb, self.thumb_quality, self.thumb_frame = crop.copy(), quality, frame_index

    @property
    def mean_probs(self) -> np.ndarray | None:
        return None if self.prob_sum is None else self.prob_sum / self.n_classified


class StreamSource(str):
    """A stream URL (rtsp://, http://, file:// ...) or a camera index where a video path would stand;
    ``stem`` / ``name`` name its outputs (``camera0``, the URL's last path part)."""

    @property
    def stem(self) -> str:
        if self.isdigit():
            return f"camera{self}"
        tail = self.split("?")[0].rstrip("/").rsplit("/", 1)[-1]
        return re.sub(r"[^\w.-]+", "_", tail.rsplit(".", 1)[0] if "." in tail else tail) or "stream"

    @property
    def name(self) -> str:
        return self.stem


def as_source(path: str | Path) -> Path | StreamSource:
    """A stream URL or camera index as a ``StreamSource``, anything else as a ``Path``."""
    s = str(path)
    if is_stream(s):
        return StreamSource(s)
    return Path(path)


def detection_interval(fps: float, hz: float, at_least: int = 1) -> int:
    """Detect every N-th frame: N = round(fps / hz), never under ``at_least`` (TEST.DETECT_EVERY_MIN caps the
    detector's cost per frame: on 2 cores SSDLite on every frame of a 768x576 clip does not keep 20 fps)."""
    return max(at_least, 1, round(fps / hz))


def list_videos(path: str | Path, name: str = "") -> list[Path | StreamSource]:
    """A video file, a stream URL / camera index, or the videos in a folder (only ``name`` when given), sorted."""
    if isinstance(as_source(path), StreamSource):
        return [as_source(path)]
    problem = video_source_problem(str(path), name)
    if problem:
        raise VideoError(problem)
    p = Path(path)
    if p.is_file():
        return [p]
    if name:
        return [p / name]
    vids = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in VIDEO_EXTS)
    if not vids:
        raise VideoError(f"no videos ({', '.join(VIDEO_EXTS)}) in folder {p}; check TEST.VIDEO_PATH")
    return vids


def open_video(path: Path | StreamSource) -> tuple[cv2.VideoCapture, np.ndarray, dict]:
    """Open ``path`` and read its first frame; ``VideoError`` for a missing, non-video or empty file."""
    if isinstance(path, StreamSource):
        cap = cv2.VideoCapture(int(path) if path.isdigit() else str(path))
        return _first_frame(cap, path, "stream / camera (OpenCV could not open it or read a frame)")
    if not path.exists():
        raise VideoError(f"video not found: {path}; set TEST.VIDEO_PATH to an existing file")
    if not path.is_file():
        raise VideoError(f"{path} is not a file; process_video takes one video (a folder goes through cctv.app.process_videos)")
    if path.stat().st_size == 0:
        raise VideoError(f"{path} is an empty file (0 bytes), not a video")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        raise VideoError(f"{path} is not a readable video (OpenCV could not open it)")
    return _first_frame(cap, path, "video: it has no frames that OpenCV can decode")


def _first_frame(cap: cv2.VideoCapture, path: Any, what: str) -> tuple[cv2.VideoCapture, np.ndarray, dict]:
    ok, frame = cap.read() if cap.isOpened() else (False, None)
    if not ok or frame is None:
        cap.release()
        raise VideoError(f"{path} is not a readable {what}")
    fps = cap.get(cv2.CAP_PROP_FPS)
    meta = {"fps": fps if fps and math.isfinite(fps) and fps > 0 else DEFAULT_FPS,
            "width": int(frame.shape[1]), "height": int(frame.shape[0]),
            "frame_count": int(max(cap.get(cv2.CAP_PROP_FRAME_COUNT), 0))}
    return cap, frame, meta


def _colour(track_id: int) -> tuple[int, int, int]:
    """A stable, well-spread BGR colour per id (golden-ratio hue steps)."""
    hue = int((track_id * 0.618033988749895 % 1.0) * 180)
    hsv = np.uint8([[[hue, 200, 255]]])
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])


def draw_track(img: np.ndarray, box: Sequence[int], track_id: int, lines: list[str]) -> None:
    """Box, ``#id`` tag above it and label lines inside it on a darkened band (in place)."""
    x1, y1, x2, y2 = box
    colour = _colour(track_id)
    scale = max(0.35, min(0.6, img.shape[0] / 2400))  # 0.45 at 1080p
    thick = max(1, int(round(img.shape[0] / 540)))
    cv2.rectangle(img, (x1, y1), (x2, y2), colour, thick)
    font = cv2.FONT_HERSHEY_SIMPLEX
    (tw, th), base = cv2.getTextSize(f"#{track_id}", font, scale, 1)
    top = max(0, y1 - th - base - 2)
    cv2.rectangle(img, (x1, top), (x1 + tw + 4, top + th + base + 2), colour, -1)
    cv2.putText(img, f"#{track_id}", (x1 + 2, top + th + 1), font, scale, (0, 0, 0), 1, cv2.LINE_AA)
    y = top + th + base + 2
    for text in lines:
        (tw, th), base = cv2.getTextSize(text, font, scale, 1)
        band = img[y:min(img.shape[0], y + th + base + 2), x1:min(img.shape[1], x1 + tw + 4)]
        band //= 3  # darken instead of painting over: the person stays visible
        cv2.putText(img, text, (x1 + 2, y + th + 1), font, scale, (255, 255, 255), 1, cv2.LINE_AA)
        y += th + base + 2


def _clip(box: np.ndarray, w: int, h: int) -> list[int]:
    x1, y1, x2, y2 = (float(v) for v in box)
    return [max(0, math.floor(x1)), max(0, math.floor(y1)), min(w, math.ceil(x2)), min(h, math.ceil(y2))]


def _fps(frames: int, seconds: float) -> float | None:
    return round(frames / seconds, 2) if seconds > 0 else None


def _round(p: np.ndarray | None, names: list[str]) -> dict[str, float] | None:
    return None if p is None else {n: round(float(v), 4) for n, v in zip(names, p)}


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def output_paths(video: Path, out_dir: Path) -> dict[str, Path]:
    return {"video": out_dir / f"{video.stem}_annotated.mp4", "json": out_dir / f"{video.stem}_tracks.json",
            "csv": out_dir / f"{video.stem}_frames.csv", "thumbs": out_dir / f"{video.stem}_thumbs",
            "report": out_dir / f"{video.stem}_report" / "index.html", "mot": out_dir / f"{video.stem}_mot.txt"}


class _VideoRun:
    """The state of one video being processed: capture, writers, tracker, tracks, timings."""

    def __init__(self, video: Path, predictor: PredictorLike, opts: VideoOptions, out_dir: Path,
                 detector: Detector | None):
        self.video, self.predictor, self.opts = video, predictor, opts
        self.cap, self.first_frame, self.meta = open_video(video)
        try:
            self.detector = detector or opts.make_detector(video)
        except BaseException:
            self.cap.release()
            raise
        out_dir.mkdir(parents=True, exist_ok=True)
        self.paths = output_paths(video, out_dir)
        self.attr_names = list(predictor.attr_names)
        # a checkpoint's Predictor carries its contract's decoder (thresholds, group decoding)
        self.decoder = getattr(predictor, "decoder", None) or LabelDecoder(self.attr_names, predictor.groups,
                                                                           opts.threshold)
        # precomputed boxes (the file detector) cost nothing to read: every frame uses them
        self.every = 1 if getattr(self.detector, "name", "") == "file" else (
            opts.detect_every or detection_interval(self.meta["fps"], opts.detect_hz, opts.detect_every_min))
        if self.every > 1:
            log.info("%s: detecting every %d frames (TEST.DETECT_EVERY), tracks held in between", video, self.every)
        # the tracker sees only the detected frames: its frame rate is theirs
        self.tracker = ByteTracker(self.meta["fps"] / self.every, opts.track_high,
                                   lost_seconds=opts.track_lost_seconds, match_thresh=opts.track_match,
                                   appearance=opts.track_appearance)
        self.zones = ZoneFilter(opts.zones, self.meta["width"], self.meta["height"])
        self.every_factor = 1  # the detector's own slow-down (cctv.ssdlite small-people input)
        self.tracked = ByteTracker.empty()  # held on the frames the detector skips
        self.tracks: dict[int, TrackRecord] = {}
        self.secs = {"detector": 0.0, "tracker": 0.0, "par": 0.0}
        self.warm: tuple[float, dict, int] | None = None  # (elapsed, secs, crops) after frame 1: warm-up
        self.warm_cpu = 0.0  # process CPU time (all threads) after frame 1
        self.n_frames = self.n_crops = self.n_detected = 0
        self.writer = self._open_writer()
        self.csv_file = open(self.paths["csv"], "w", newline="", encoding="utf-8")
        self.rows = csv.writer(self.csv_file)
        self.rows.writerow(CSV_FIXED + self.attr_names)

    def _open_writer(self):
        if not self.opts.write_video:
            return None
        m = self.meta
        writer = cv2.VideoWriter(str(self.paths["video"]), cv2.VideoWriter_fourcc(*"mp4v"), m["fps"],
                                 (m["width"], m["height"]))
        if not writer.isOpened():
            self.cap.release()
            raise VideoError(f"cannot write {self.paths['video']} (OpenCV mp4v writer failed); "
                             "check TEST.OUTPUT_VIDEO_PATH")
        return writer

    def track(self, tid: int) -> TrackRecord:
        if tid not in self.tracks:
            o = self.opts
            self.tracks[tid] = TrackRecord(tid, make_smoother(o.smoothing, o.ema_alpha, o.window))
        return self.tracks[tid]

    def _follow_detector_rate(self) -> None:
        """A detector that now runs less often (SSDLite's small-people input): the tracker's clock follows."""
        factor = getattr(self.detector, "every_factor", 1)
        if factor != self.every_factor:
            self.every_factor = factor
            self.tracker.set_fps(self.meta["fps"] / (self.every * factor))
            log.info("detecting every %d frames from here on (the detector asked for 1/%d of the rate)",
                     self.every * factor, factor)

    def step(self, frame: np.ndarray, dets: Any, det_seconds: float) -> None:
        """Track ``frame``'s detections, classify (every CHECK_PER_FRAME detected frames), write its rows and
        drawing. ``dets`` None: a frame the detector skipped (TEST.DETECT_EVERY); the last tracks are held."""
        self.n_frames += 1
        self.secs["detector"] += det_seconds
        t1 = time.perf_counter()
        if dets is not None:
            self.n_detected += 1
            if self.zones:
                keep = self.zones.keep(dets.xyxy)
                dets = Detections(dets.xyxy[keep], dets.scores[keep])
            self._follow_detector_rate()
            self.tracked = self.tracker.update(dets, frame)
        tracked = self.tracked
        t2 = time.perf_counter()
        boxes = [_clip(b, self.meta["width"], self.meta["height"]) for b in tracked.xyxy]
        classified: set[int] = set()
        if dets is not None and (self.n_detected - 1) % self.opts.check_per_frame == 0 and len(tracked):
            which, probs, embs = _classify(frame, boxes, self.predictor, self.opts, len(self.attr_names))
            self.n_crops += len(which)
            for k, (i, p) in enumerate(zip(which, probs)):
                self.track(int(tracked.ids[i])).observe(p, None if embs is None else embs[k])
                classified.add(i)
            for i in classified:  # before any drawing on the frame
                self.track(int(tracked.ids[i])).offer_thumb(frame, boxes[i], tracked.scores[i], self.n_frames)
        t3 = time.perf_counter()
        self.secs["tracker"] += t2 - t1
        self.secs["par"] += t3 - t2
        self._write_frame(frame, tracked, boxes, classified)

    def _shown(self, rec: TrackRecord, frame: np.ndarray) -> bool:
        """Draw / write this track on this frame: it has TEST.MIN_TRACK_FRAMES frames and is not (so far) a
        static non-person object; while it has not moved, its person shape is checked once a second."""
        if len(rec.frames) < self.opts.min_track_frames:
            return False
        if not self.opts.static_filter or rec.moved:
            return True
        rec.moved = has_moved(rec.boxes[0], rec.boxes[-1])
        if not rec.moved and self.n_frames - rec.shape_frame >= self.meta["fps"]:
            rec.shape = max(rec.shape, person_shape_score(frame, rec.boxes[-1]))
            rec.shape_frame = self.n_frames
        return not rec.is_static_object()

    def _write_frame(self, frame: np.ndarray, tracked, boxes: list, classified: set[int]) -> None:
        shown = []
        for i, tid in enumerate(int(t) for t in tracked.ids):
            rec = self.track(tid)
            rec.frames.append(self.n_frames)
            rec.boxes.append(boxes[i])
            rec.scores.append(round(float(tracked.scores[i]), 4))
            if self._shown(rec, frame):  # every check before anything is drawn on the frame
                shown.append((i, tid, rec))
        for i, tid, rec in shown:
            p = rec.smoother.value
            text = self.decoder.text(self.decoder.decode(p)) if p is not None else []
            probs_txt = [f"{v:.4f}" for v in p] if p is not None else [""] * len(self.attr_names)
            self.rows.writerow([self.n_frames, tid, *boxes[i], f"{tracked.scores[i]:.4f}", int(i in classified),
                                "; ".join(text), *probs_txt])
            if self.writer is not None:
                draw_track(frame, boxes[i], tid, text[:self.opts.max_label_lines])
        self.csv_file.flush()
        if self.writer is not None:
            self.writer.write(frame)

    def close(self) -> None:
        self.cap.release()
        if self.writer is not None:
            self.writer.release()
        self.csv_file.close()

    def mark_warm(self, elapsed: float) -> None:
        """Remember the timings after the first frame (first calls allocate, load kernels, fill caches)."""
        self.warm = (elapsed, dict(self.secs), self.n_crops)
        self.warm_cpu = time.process_time()

    def _fps_after_warmup(self, elapsed: float) -> dict | None:
        if self.warm is None or self.n_frames < 2:
            return None
        (e0, s0, c0), n = self.warm, self.n_frames - 1
        crops, par = self.n_crops - c0, self.secs["par"] - s0["par"]
        return {"detector": _fps(n, self.secs["detector"] - s0["detector"]),
                "tracker": _fps(n, self.secs["tracker"] - s0["tracker"]),
                "par": _fps(n, par) if crops else None, "overall": _fps(n, elapsed - e0),
                "par_crops": _fps(crops, par) if crops else None}

    def reported(self) -> list[TrackRecord]:
        """The tracks that count as people, by id: at least TEST.MIN_TRACK_FRAMES frames and (TEST.STATIC_FILTER)
        not a never-moving object without a person's shape."""
        return [r for _, r in sorted(self.tracks.items()) if len(r.frames) >= self.opts.min_track_frames
                and not (self.opts.static_filter and r.is_static_object())]

    def end_status(self) -> str:
        """``truncated`` when TEST.MAX_FRAMES stopped a file before its end (the footage index keeps such a run
        incomplete, so a full run replaces it); ``incomplete`` when a file ends (OpenCV stops decoding) more than
        one frame before its stated frame count; else ``complete``."""
        expected, n = self.meta["frame_count"], self.n_frames
        if self.opts.max_frames and n >= self.opts.max_frames and not isinstance(self.video, StreamSource) \
                and expected and n + 1 < expected:
            return "truncated"
        if isinstance(self.video, StreamSource) or not expected or (self.opts.max_frames and n >= self.opts.max_frames):
            return "complete"
        if n + 1 < expected:
            log.warning("%s: only %d of its %d frames could be decoded (a truncated or damaged file); "
                        "status incomplete", self.video, n, expected)
            return "incomplete"
        return "complete"

    def summary(self, status: str, elapsed: float) -> dict:
        n, secs, n_crops, reported = self.n_frames, self.secs, self.n_crops, self.reported()
        return {
            "video": str(self.video), "complete": status == "complete", "status": status,
            "frames": n, "frames_expected": self.meta["frame_count"] or None, "people_tracked": len(reported),
            "tracks_dropped": len(self.tracks) - len(reported),
            "tracks_classified": sum(r.n_classified > 0 for r in reported), "crops_classified": n_crops,
            "detector": getattr(self.detector, "name", type(self.detector).__name__),
            "par_runtime": getattr(self.predictor, "runtime", "torch"),
            # frames per second each stage alone would allow (PAR: None when it never ran)
            "fps": {"detector": _fps(n, secs["detector"]), "tracker": _fps(n, secs["tracker"]),
                    "par": _fps(n, secs["par"]) if n_crops else None, "overall": _fps(n, elapsed),
                    "par_crops": _fps(n_crops, secs["par"]) if n_crops else None},
            # the same without the first frame (warm-up); what a long video runs at
            "fps_after_warmup": self._fps_after_warmup(elapsed),
            # CPU time of the whole process per frame after frame 1: a speed measure other processes barely change
            "cpu_ms_per_frame": round((time.process_time() - self.warm_cpu) * 1000 / (n - 1), 1)
            if self.warm is not None and n > 1 else None,
            "seconds": {**{k: round(v, 3) for k, v in secs.items()}, "overall": round(elapsed, 3)},
            "outputs": {k: str(v) for k, v in self.paths.items()
                        if (k != "video" or self.writer is not None) and (k != "report" or self.opts.report)},
        }

    def write_outputs(self, summary: dict) -> None:
        """Thumbnails, the tracks JSON and (TEST.REPORT) the HTML report."""
        o, tracks = self.opts, self.reported()
        _save_thumbs(tracks, self.paths["thumbs"])
        self._write_mot(tracks)
        _write_json(self.paths["json"], {
            **summary, "video_info": self.meta, "attr_names": self.attr_names,
            "groups": [[g.name, g.kind, *g.attrs] for g in self.decoder.groups], "threshold": o.threshold,
            "smoothing": {"type": o.smoothing, "ema_alpha": o.ema_alpha, "window": o.window},
            "check_per_frame": o.check_per_frame, "detect_every": self.every * self.every_factor,
            "frames_detected": self.n_detected, "detector_input": list(getattr(self.detector, "scales", [])) or None,
            "tracks": [_track_json(r, self.attr_names, self.decoder) for r in tracks],
            # best classified crop per track: {track id: {file (relative to this JSON), frame}}
            "thumbs": {str(r.track_id): {"file": r.thumb_path, "frame": r.thumb_frame} for r in tracks if r.thumb_path},
        })
        if o.report:
            _write_report(self.paths)

    def _write_mot(self, tracks: list[TrackRecord]) -> None:
        """``<stem>_mot.txt``: every frame each reported track was tracked on, its gaps of up to
        TEST.TRACK_GAP_SECONDS filled by linear interpolation."""
        gap = int(round(self.opts.track_gap_seconds * self.meta["fps"]))
        rows = []
        for r in tracks:
            frames, boxes, scores = interpolate_gaps(r.frames, r.boxes, r.scores, gap)
            rows += [(f, r.track_id, b, sc) for f, b, sc in zip(frames, boxes, scores)]
        write_mot(self.paths["mot"], rows)

    def frames(self):
        """The frames to process: the first one (already read), then until the end or TEST.MAX_FRAMES."""
        frame, n = self.first_frame, 0
        while frame is not None:
            yield frame
            n += 1
            if self.opts.max_frames and n >= self.opts.max_frames:
                return
            ok, frame = self.cap.read()
            frame = frame if ok else None

    def detected(self):
        """(frame, detections, detector seconds) per frame. With TEST.OVERLAP the next frames are decoded and
        detected in a worker thread while this one is tracked and classified (OpenCV, onnxruntime and
        PyTorch release the GIL, so the detector and the PAR model run at the same time)."""
        stream = _detect_each(self.frames(), self.detector, self.every)
        yield from (_prefetched(stream) if self.opts.overlap else stream)


def _detect_each(frames: Iterable[np.ndarray], detector: Detector, every: int = 1):
    """(frame, detections, seconds); detections None on the frames between every ``every``-th (times the
    detector's ``every_factor``: an SSDLite that switched to its small-people input detects half as often, for
    about the same CPU time)."""
    due = 1
    for i, frame in enumerate(frames, 1):
        if i < due:
            yield frame, None, 0.0
            continue
        t0 = time.perf_counter()
        dets = detector(frame, i)
        due = i + every * getattr(detector, "every_factor", 1)
        yield frame, dets, time.perf_counter() - t0


_END = object()


def _prefetched(items: Iterable[Any], depth: int = 2):
    """``items`` produced ``depth`` ahead in a daemon thread; its errors re-raised here."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_END)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, which raises it
            put(e)

    worker = threading.Thread(target=work, name="video-detector", daemon=True)
    worker.start()
    try:
        while (item := q.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join(timeout=10)


def process_video(video_path: str | Path, predictor: PredictorLike, options: VideoOptions | Any,
                  out_dir: str | Path, detector: Detector | None = None) -> dict:
    """Run the whole pipeline on one video; returns the summary (also stored in the JSON).

    ``options`` is a ``VideoOptions`` or a config with the TEST.* keys. Raises ``VideoError`` for a
    missing / non-video / empty file, ``DetectorError`` for a detector that cannot be built.
    A video in which nobody is found is not an error: it is logged and its outputs hold no tracks.
    """
    opts = options if isinstance(options, VideoOptions) else VideoOptions.from_cfg(options)
    opts.validate()
    run = _VideoRun(as_source(video_path), predictor, opts, Path(out_dir), detector)
    total = run.meta["frame_count"] or None
    if opts.max_frames and total:
        total = min(total, opts.max_frames)
    status, t_start = "running", time.perf_counter()
    bar = tqdm(total=total, unit="frame", desc=run.video.name, disable=not opts.progress, leave=False)
    try:
        with closing(run.detected()) as stream:  # stops the detector thread however the loop ends
            for frame, dets, det_seconds in stream:
                run.step(frame, dets, det_seconds)
                bar.update(1)
                if run.n_frames == 1:
                    run.mark_warm(time.perf_counter() - t_start)
        status = run.end_status()
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    except BaseException:
        status = "failed"
        raise
    finally:
        bar.close()
        run.close()
        summary = run.summary(status, time.perf_counter() - t_start)
        run.write_outputs(summary)
        _log_summary(summary, status)
    if not summary["people_tracked"]:
        log.warning("%s: no people detected in %d frames (detector %s); outputs hold no tracks",
                    run.video.name, run.n_frames, summary["detector"])
    return summary


def _classify(frame: np.ndarray, boxes: list[list[int]], predictor: PredictorLike, opts: VideoOptions,
              n_attrs: int) -> tuple[list[int], np.ndarray, np.ndarray | None]:
    """One batch through the PAR model: (indices of the boxes classified, their (K, A) probabilities, their
    (K, D) appearance embeddings when the checkpoint has an embedding head, else None)."""
    crops, which = [], []
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        if y2 - y1 < max(1, opts.min_box_height) or x2 - x1 < max(1, opts.min_box_width):
            continue  # too small to say anything reliable about
        crops.append(cv2.cvtColor(frame[y1:y2, x1:x2], cv2.COLOR_BGR2RGB))
        which.append(i)
    if not crops:
        return [], np.zeros((0, n_attrs), np.float32), None
    if getattr(predictor, "has_embeddings", False):  # one network pass for both
        probs, embs = (np.asarray(a) for a in predictor.predict_with_embeddings(crops))
    else:
        probs, embs = np.asarray(predictor.predict_images(crops)), None
    if probs.shape != (len(crops), n_attrs):
        raise ValueError(f"predictor returned shape {probs.shape} for {len(crops)} crops and {n_attrs} attributes")
    return which, probs, embs


def _save_thumbs(records: Any, folder: Path) -> None:
    """``<stem>_thumbs/<track id>.jpg`` per track with a classified crop; sets ``thumb_path``."""
    for rec in records:
        if rec.thumb is not None:
            folder.mkdir(parents=True, exist_ok=True)
            if cv2.imwrite(str(folder / f"{rec.track_id}.jpg"), rec.thumb, [cv2.IMWRITE_JPEG_QUALITY, 90]):
                rec.thumb_path = f"{folder.name}/{rec.track_id}.jpg"


def _write_report(paths: dict[str, Path]) -> None:
    """The browsable report; a failure there is logged, never hides the run's own outcome."""
    from cctv.report import write_report

    try:
        write_report(paths["json"], paths["report"])
    except Exception as e:  # noqa: BLE001 - an extra output must not mask the video's result
        log.warning("could not write the report %s: %s: %s", paths["report"], type(e).__name__, e)


def _track_json(rec: TrackRecord, attr_names: list[str], decoder: LabelDecoder) -> dict:
    mean = rec.mean_probs
    labels = decoder.decode(mean) if mean is not None else None
    return {
        "track_id": rec.track_id, "first_frame": rec.frames[0] if rec.frames else None,
        "last_frame": rec.frames[-1] if rec.frames else None, "frames_seen": len(rec.frames),
        "n_classified": rec.n_classified, "frames": rec.frames, "boxes": rec.boxes, "scores": rec.scores,
        "probs": _round(mean, attr_names), "labels": labels,
        "label_text": decoder.text(labels) if labels is not None else [],
        **({} if rec.embedding is None else {"embedding": [round(float(v), 5) for v in rec.embedding]}),
    }


def _log_summary(s: dict, status: str) -> None:
    f = s.get("fps_after_warmup") or s["fps"]  # a long video's speed; the JSON holds both
    show = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
    log.info("%s [%s]: %d frames, %d people tracked (%d classified, %d crops); fps detector %s | tracker %s | "
             "PAR (%s) %s (%s crops/s) | overall %s (after frame 1); outputs in %s", Path(s["video"]).name, status, s["frames"],
             s["people_tracked"], s["tracks_classified"], s["crops_classified"], show(f["detector"]),
             show(f["tracker"]), s.get("par_runtime", "torch"), show(f["par"]), show(f["par_crops"]), show(f["overall"]),
             Path(s["outputs"]["json"]).parent)
