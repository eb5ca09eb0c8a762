"""ByteTrack (from the maintained ``supervision`` package) behind a two-line interface."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import supervision as sv

from cctv.appearance import AppearanceLinker
from cctv.detectors import Detections


@dataclass
class TrackedBoxes:
    """This frame's tracked people: ``ids`` (N,) int, ``xyxy`` (N, 4) detector boxes, ``scores`` (N,)."""

    ids: np.ndarray
    xyxy: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


class ByteTracker:
    """``update(detections) -> TrackedBoxes`` once per frame; ids persist while a person stays matched.

    ``conf`` is ByteTrack's high-score threshold: boxes above it start and continue tracks (a new
    track needs conf + 0.1), boxes between 0.1 and ``conf`` only continue existing ones. A detection
    continues a track while 1 - IoU x score <= ``match_thresh`` (IoU with the track's Kalman-predicted
    box). A lost track is kept for ``lost_seconds`` before its id is retired. ``appearance``: ids also kept
    through crossings and re-found people by colour (``cctv.appearance.AppearanceLinker``; needs the frame).
    """

    def __init__(self, fps: float, conf: float, *, lost_seconds: float, match_thresh: float,
                 appearance: bool = False):
        self.linker = AppearanceLinker(fps or 30, int(round((fps or 30) * lost_seconds))) if appearance else None
        self.lost_seconds = lost_seconds
        fps = max(1, int(round(fps or 30)))
        # supervision scales the buffer by frame_rate / 30, so pass the buffer in 30 fps frames
        self.tracker = sv.ByteTrack(track_activation_threshold=conf, lost_track_buffer=max(1, int(30 * lost_seconds)),
                                    minimum_matching_threshold=match_thresh, frame_rate=fps)

    def set_fps(self, fps: float) -> None:
        """The rate of ``update`` calls changed (the detector now runs less often): lost tracks are still kept
        ``lost_seconds`` of video."""
        self.tracker.max_time_lost = max(1, int(round(fps * self.lost_seconds)))
        if self.linker is not None:
            self.linker.fps, self.linker.max_lost = max(float(fps), 1e-3), max(1, int(round(fps * self.lost_seconds)))

    @staticmethod
    def empty() -> TrackedBoxes:
        return TrackedBoxes(np.zeros(0, int), np.zeros((0, 4), np.float32), np.zeros(0, np.float32))

    def update(self, det: Detections, frame: np.ndarray | None = None) -> TrackedBoxes:
        d = sv.Detections(xyxy=np.asarray(det.xyxy, np.float32).reshape(-1, 4),
                          confidence=np.asarray(det.scores, np.float32).reshape(-1),
                          class_id=np.zeros(len(det), dtype=int))
        out = self.tracker.update_with_detections(d)
        if len(out) == 0:
            return self.empty()
        ids, xyxy = np.asarray(out.tracker_id, int), np.asarray(out.xyxy, np.float32)
        if self.linker is not None and frame is not None:
            ids = self.linker.update(ids, xyxy, frame)
        return TrackedBoxes(ids, xyxy, np.asarray(out.confidence, np.float32))
