"""Appearance-aware identities on top of ByteTrack (IoU-only), as DeepSORT / BoT-SORT use appearance, with a cheap
embedding instead of a ReID network: an HSV colour histogram (hue x saturation) of the upper and of the lower half
of each box (a central strip, less background), computed only on the frames the tracker runs.

Two steps map ByteTrack's ids to the ids reported (``AppearanceLinker.update``):

* **Re-link**: a track ByteTrack starts afresh takes the id of a recently lost track (lost at most
  ``max_lost`` tracker frames ago) when its box is where that person could have walked to (centre within
  ``0.5 + 1.5 x seconds lost`` of the lost box's height, heights within 1.5x) and looks the same (histogram
  similarity >= ``RELINK_SIM``); the most similar one wins.
* **Swap repair**: two tracks that touched (IoU > 0) in the last ``max_lost`` frames and are apart again swap
  ids when each looks more like the other's remembered appearance by ``SWAP_MARGIN``: IoU-only association
  can exchange two people who cross.

A track's remembered appearance is the running mean of its histograms from frames where its box overlaps no
other box (an occluded box mixes two people).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

H_BINS, S_BINS = 8, 4
STRIP = 0.2  # fraction of the box width left out on each side
RELINK_SIM = 0.8  # Bhattacharyya coefficient (1 = identical histograms) for a re-link
SWAP_MARGIN = 0.1  # the swapped pairing must be this much more similar (summed over the two) to swap
EMA = 0.2  # weight of a new clean histogram in a track's appearance


def colour_embedding(frame: np.ndarray, box: np.ndarray) -> np.ndarray | None:
    """(2 x H_BINS x S_BINS,) hue-saturation histograms of the upper and lower half of ``box`` (each sums to 1),
    None when the box is too small (< 8 px) once clipped to the frame."""
    h, w = frame.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box)
    dx = (x2 - x1) * STRIP
    x1, x2 = max(0, int(x1 + dx)), min(w, int(x2 - dx))
    y1, y2 = max(0, int(y1)), min(h, int(y2))
    if x2 - x1 < 4 or y2 - y1 < 8:
        return None
    hsv = cv2.cvtColor(frame[y1:y2, x1:x2], cv2.COLOR_BGR2HSV)
    mid = (y2 - y1) // 2
    out = []
    for part in (hsv[:mid], hsv[mid:]):
        hist = cv2.calcHist([part], [0, 1], None, [H_BINS, S_BINS], [0, 180, 0, 256]).ravel()
        out.append(hist / max(float(hist.sum()), 1e-9))
    return np.concatenate(out).astype(np.float32)


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Mean Bhattacharyya coefficient of the two halves: 1 = the same colours, 0 = none shared."""
    return float(np.sqrt(a * b).sum() / 2)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) IoU of ``x1, y1, x2, y2`` boxes."""
    a, b = np.asarray(a, float).reshape(-1, 4), np.asarray(b, float).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clip(0).prod(2)
    area = lambda x: (x[:, 2] - x[:, 0]).clip(0) * (x[:, 3] - x[:, 1]).clip(0)  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None] - inter, 1e-9)


@dataclass
class _Track:
    """What is remembered about one reported id."""

    box: np.ndarray
    last: int  # tracker frame it was last seen on
    emb: np.ndarray | None = None
    touched: dict = field(default_factory=dict)  # other reported id -> last tracker frame their boxes overlapped


class AppearanceLinker:
    """``update(raw_ids, xyxy, frame) -> reported ids``: ByteTrack's ids mapped through re-links and swap repairs.

    ``fps``: tracker frames per second; ``max_lost``: how many tracker frames a lost id can be re-linked to.
    """

    def __init__(self, fps: float, max_lost: int):
        self.fps, self.max_lost = max(float(fps), 1e-3), max(1, int(max_lost))
        self.ids: dict[int, int] = {}  # ByteTrack id -> reported id
        self.tracks: dict[int, _Track] = {}
        self.n = 0
        self.relinks = self.swaps = 0

    def update(self, raw_ids: np.ndarray, xyxy: np.ndarray, frame: np.ndarray) -> np.ndarray:
        self.n += 1
        xyxy = np.asarray(xyxy, float).reshape(-1, 4)
        embs = [colour_embedding(frame, b) for b in xyxy]
        ious = iou_matrix(xyxy, xyxy)
        np.fill_diagonal(ious, 0.0)
        clean = ious.max(1, initial=0.0) <= 0.0
        present: set = set()
        for r in (int(r) for r in raw_ids if int(r) in self.ids):
            if self.ids[r] in present:  # ByteTrack found a lost id again after it was re-linked elsewhere
                self.ids[r] = self._fresh(r)
            present.add(self.ids[r])
        out = np.array([self._reported(int(r), xyxy[k], embs[k], present) for k, r in enumerate(raw_ids)], int)
        self._repair_swaps(raw_ids, out, embs, clean)
        for k, rid in enumerate(out):
            t = self.tracks.setdefault(int(rid), _Track(xyxy[k], self.n))
            t.box, t.last = xyxy[k], self.n
            if clean[k] and embs[k] is not None:
                t.emb = embs[k] if t.emb is None else (1 - EMA) * t.emb + EMA * embs[k]
            for j in np.flatnonzero(ious[k] > 0):
                t.touched[int(out[j])] = self.n
        self._forget()
        return out

    def _reported(self, raw: int, box: np.ndarray, emb: np.ndarray | None, present: set) -> int:
        """The reported id of ByteTrack's ``raw`` id; a new one is re-linked to a lost id (not ``present`` in this
        frame, which it joins) or keeps its own."""
        if raw not in self.ids:
            self.ids[raw] = self._relink(box, emb, present) or self._fresh(raw)
            present.add(self.ids[raw])
        return self.ids[raw]

    def _fresh(self, raw: int) -> int:
        rid = raw
        while rid in self.tracks or rid in self.ids.values():  # an id re-linked away stays unused
            rid += 1_000_000
        return rid

    def _relink(self, box: np.ndarray, emb: np.ndarray | None, present: set) -> int | None:
        if emb is None:
            return None
        best, best_sim = None, RELINK_SIM
        h = box[3] - box[1]
        for rid, t in self.tracks.items():
            lost = self.n - t.last
            th = t.box[3] - t.box[1]
            if rid in present or t.emb is None or not 1 / 1.5 <= h / max(th, 1e-6) <= 1.5:
                continue
            dist = np.hypot(*((box[:2] + box[2:]) / 2 - (t.box[:2] + t.box[2:]) / 2))
            if dist > th * (0.5 + 1.5 * lost / self.fps):
                continue
            sim = similarity(emb, t.emb)
            if sim >= best_sim:
                best, best_sim = rid, sim
        if best is not None:
            self.relinks += 1
        return best

    def _repair_swaps(self, raw_ids: np.ndarray, out: np.ndarray, embs: list, clean: np.ndarray) -> None:
        """Swap the reported ids of two clean boxes that recently touched and each look like the other's track."""
        for a in range(len(out)):
            for b in range(a + 1, len(out)):
                ta, tb = self.tracks.get(int(out[a])), self.tracks.get(int(out[b]))
                if not (clean[a] and clean[b]) or ta is None or tb is None or ta.emb is None or tb.emb is None:
                    continue
                if embs[a] is None or embs[b] is None or self.n - ta.touched.get(int(out[b]), -10**9) > self.max_lost:
                    continue
                keep = similarity(embs[a], ta.emb) + similarity(embs[b], tb.emb)
                swap = similarity(embs[a], tb.emb) + similarity(embs[b], ta.emb)
                if swap > keep + SWAP_MARGIN:
                    out[a], out[b] = out[b], out[a]
                    self.ids[int(raw_ids[a])], self.ids[int(raw_ids[b])] = int(out[a]), int(out[b])
                    ta.touched.pop(int(out[a]), None)
                    tb.touched.pop(int(out[b]), None)
                    self.swaps += 1

    def _forget(self) -> None:
        for rid in [r for r, t in self.tracks.items() if self.n - t.last > self.max_lost]:
            del self.tracks[rid]
