"""Which tracked boxes are people worth reporting: zones, static non-person objects, short tracks, gaps.

* Zones (``TEST.ZONES``): polygons, ``{include: [[x, y], ...]}`` or ``{exclude: [[x, y], ...]}``, in pixels or,
  when every coordinate is within [0, 1], relative to the frame. A box counts where its bottom centre (the
  feet) is, as supervision's ``PolygonZone`` does by default: inside an include zone (any, when there are
  include zones) and inside no exclude zone. Detections elsewhere never reach the tracker.
* Static objects (``TEST.STATIC_FILTER``): a track whose box centre never moves by more than
  ``STATIC_MOTION`` of its height and that does not look like a person to OpenCV's HOG people detector (a
  margin of at least ``PERSON_SHAPE_MIN`` on any of its checks) is a thing (a ticket machine, a sign).
* ``interpolate_gaps``: frames a reported track was lost for (up to a limit) filled linearly, as ByteTrack's
  own offline post-processing does.
"""
from __future__ import annotations

from typing import Any, Sequence

import cv2
import numpy as np
import supervision as sv

from configs.errors import UserError

STATIC_MOTION = 0.15  # a track that never moved its centre more than this x its height is a static candidate
PERSON_SHAPE_MIN = -2.0  # HOG people SVM margin: a ticket machine scores -3.3, walkers and standers > -1
HOG_WINDOW = (64, 128)
HOG_MARGIN = (0.15, 0.08)  # the 64x128 window holds a person with this margin (fraction of width / height)


class ZoneError(UserError, ValueError):
    """A malformed TEST.ZONES entry; the message shows the expected form."""


ZONE_FORM = "TEST.ZONES entries look like {include: [[x, y], [x, y], [x, y], ...]} or {exclude: [...]}"


def _polygon(points: Any, k: int) -> np.ndarray:
    try:
        a = np.asarray(points, dtype=float)
    except (TypeError, ValueError):
        raise ZoneError(f"TEST.ZONES[{k}]: points must be numbers [[x, y], ...], got {points!r}") from None
    if a.ndim != 2 or a.shape[1] != 2 or len(a) < 3 or not np.isfinite(a).all():
        raise ZoneError(f"TEST.ZONES[{k}]: a polygon needs at least 3 [x, y] points, got {points!r}")
    if (a < 0).any():
        raise ZoneError(f"TEST.ZONES[{k}]: negative coordinates in {points!r} (pixels or 0-1 relative)")
    return a


def parse_zones(zones: Sequence[Any]) -> list[tuple[str, np.ndarray]]:
    """TEST.ZONES -> [(include | exclude, (P, 2) points)]; ``ZoneError`` for a malformed entry."""
    out = []
    for k, z in enumerate(zones or []):
        if not isinstance(z, dict) or len(z) != 1 or next(iter(z)) not in ("include", "exclude"):
            raise ZoneError(f"TEST.ZONES[{k}] = {z!r}: {ZONE_FORM}")
        kind, points = next(iter(z.items()))
        out.append((kind, _polygon(points, k)))
    return out


class ZoneFilter:
    """``keep(xyxy) -> (N,) bool`` for a frame of ``width`` x ``height`` (relative polygons scaled to it)."""

    def __init__(self, zones: Sequence[Any], width: int, height: int):
        self.zones = []
        for kind, pts in parse_zones(zones):
            if pts.max() <= 1.0:
                pts = pts * [width, height]
            poly = np.round(pts).astype(int)
            self.zones.append((kind, sv.PolygonZone(poly, triggering_anchors=(sv.Position.BOTTOM_CENTER,))))

    def __bool__(self) -> bool:
        return bool(self.zones)

    def keep(self, xyxy: np.ndarray) -> np.ndarray:
        xyxy = np.asarray(xyxy, np.float32).reshape(-1, 4)
        if not self.zones or not len(xyxy):
            return np.ones(len(xyxy), bool)
        det = sv.Detections(xyxy=xyxy)
        inc = [z.trigger(det) for kind, z in self.zones if kind == "include"]
        ok = np.any(inc, axis=0) if inc else np.ones(len(xyxy), bool)
        for kind, z in self.zones:
            if kind == "exclude":
                ok &= ~z.trigger(det)
        return ok


def has_moved(first: Sequence[float], box: Sequence[float]) -> bool:
    """True when ``box``'s centre is more than STATIC_MOTION x its height away from ``first``'s."""
    (a1, b1, a2, b2), (x1, y1, x2, y2) = (tuple(float(v) for v in first), tuple(float(v) for v in box))
    dist = max(abs((x1 + x2 - a1 - a2) / 2), abs((y1 + y2 - b1 - b2) / 2))
    return dist > STATIC_MOTION * max(y2 - y1, b2 - b1, 1.0)


_HOG: list = []


def person_shape_score(frame: np.ndarray, box: Sequence[float]) -> float:
    """OpenCV's HOG people SVM margin of ``box`` seen as a person window (64x128 with HOG's margins; higher =
    more person-like; a ticket machine scores about -3, people above -1)."""
    if not _HOG:
        hog = cv2.HOGDescriptor()
        hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
        _HOG.append(hog)
    x1, y1, x2, y2 = (float(v) for v in box)
    win_h = max(y2 - y1, 8.0) / (1 - 2 * HOG_MARGIN[1])
    win_w, cx = win_h / 2, (x1 + x2) / 2
    top, left = int(y1 - HOG_MARGIN[1] * win_h), int(cx - win_w / 2)
    bottom, right = top + int(win_h), left + int(win_w)
    fh, fw = frame.shape[:2]
    if bottom <= 0 or right <= 0 or top >= fh or left >= fw or bottom <= top or right <= left:
        return float("-inf")
    # the window only, edges replicated where it leaves the frame (no copy of the whole frame)
    crop = cv2.copyMakeBorder(frame[max(0, top):min(fh, bottom), max(0, left):min(fw, right)],
                              max(0, -top), max(0, bottom - fh), max(0, -left), max(0, right - fw), cv2.BORDER_REPLICATE)
    crop = cv2.copyMakeBorder(cv2.resize(crop, HOG_WINDOW), 8, 8, 8, 8, cv2.BORDER_REPLICATE)
    _, weights = _HOG[0].detect(crop, hitThreshold=-100.0, winStride=(8, 8), padding=(0, 0))
    return float(np.max(weights)) if len(weights) else float("-inf")


def interpolate_gaps(frames: list[int], boxes: list[list[int]], scores: list[float],
                     max_gap: int) -> tuple[list[int], list[list[int]], list[float]]:
    """A track's frames with every gap of at most ``max_gap`` frames filled by linear interpolation of the
    boxes (score: the lower of the two ends); returns new lists, sorted by frame."""
    if max_gap < 2 or len(frames) < 2:
        return list(frames), [list(b) for b in boxes], list(scores)
    out_f, out_b, out_s = [frames[0]], [list(boxes[0])], [scores[0]]
    for k in range(1, len(frames)):
        f0, f1, n = frames[k - 1], frames[k], frames[k] - frames[k - 1]
        if 1 < n <= max_gap:
            b0, b1 = np.asarray(boxes[k - 1], float), np.asarray(boxes[k], float)
            for j in range(1, n):
                out_f.append(f0 + j)
                out_b.append([int(round(v)) for v in b0 + (b1 - b0) * j / n])
                out_s.append(min(scores[k - 1], scores[k]))
        out_f.append(f1)
        out_b.append(list(boxes[k]))
        out_s.append(scores[k])
    return out_f, out_b, out_s
