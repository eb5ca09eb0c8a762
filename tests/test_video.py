"""Video pipeline: ids persist, averaging and group decoding give the expected labels, outputs match
the documented schema; plus the label decoder, smoothers, Predictor and --mode predict."""
from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from tests._video_helpers import (
    ATTRS,
    GROUPS,
    N_FRAMES,
    FakeEmbedder,
    FakePredictor,
    gt_box,
    load_script,
    make_checkpoint,
    make_video,
    tiny_cfg,
)
from tools.inference import Predictor
from tools.inference.labels import LabelDecoder
from cctv import VideoOptions, process_video
from cctv.detectors import HogDetector, build_detector
from cctv.pipeline import CSV_FIXED
from cctv.smoothing import EmaSmoother, WindowSmoother

TRACK_KEYS = {"track_id", "first_frame", "last_frame", "frames_seen", "n_classified", "frames", "boxes", "scores",
              "probs", "labels", "label_text"}
SUMMARY_KEYS = {"video", "complete", "status", "frames", "people_tracked", "tracks_classified", "crops_classified",
                "detector", "fps", "seconds", "outputs"}



@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> tuple[Path, Path]:
    return make_video(tmp_path_factory.mktemp("clip"))


def _read_csv(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="", encoding="utf-8") as f:
        r = csv.DictReader(f)
        return r.fieldnames, list(r)


def _which_object(box: list[int], t: int) -> str:
    """The ground-truth rectangle that ``box`` (x1, y1, x2, y2) matches exactly on 0-based frame ``t``."""
    hits = [o for o in ("red", "blue") if (lambda x, y, w, h: [x, y, x + w, y + h])(*gt_box(o, t)) == box]
    assert len(hits) == 1, f"box {box} on frame {t + 1} matches no ground-truth rectangle"
    return hits[0]


# ----------------------------------------------------------------------------- labels and smoothing
def test_label_decoder_groups_threshold_and_text():
    names = ["Age_young", "Age_adult", "Age_old", "U_black", "U_blue", "Glasses", "Sunglasses", "Gender_female",
             "Hat", "Backpack"]
    groups = [["age", "exclusive", "Age_young", "Age_adult", "Age_old"], ["upper", "exclusive", "U_black", "U_blue"],
              ["eyewear", "optional", "Glasses", "Sunglasses"]]
    dec = LabelDecoder(names, groups, threshold=0.5)
    p = np.array([0.2, 0.3, 0.25, 0.1, 0.15, 0.45, 0.4, 0.3, 0.7, 0.55])
    labels = dec.decode(p)
    # exclusive: arg-max even below the threshold; optional below threshold: none
    assert labels == {"age": "Age_adult", "upper": "U_blue", "eyewear": "none", "Gender_female": "male",
                      "present": ["Hat", "Backpack"]}  # most likely first
    assert dec.text(labels) == ["male", "age: adult", "upper: blue", "Hat", "Backpack"]
    p2 = p.copy()
    p2[[6, 7, 8, 9]] = [0.8, 0.9, 0.1, 0.2]
    assert dec.decode(p2)["eyewear"] == "Sunglasses" and dec.decode(p2)["Gender_female"] == "female"
    assert dec.text(dec.decode(p2)) == ["female", "age: adult", "upper: blue", "eyewear: Sunglasses"]
    # display names drop the prefix most members share, and the sheet's "////" decorations
    odd = LabelDecoder(["U_black", "U_blue", "////U_Others////"], [["upper", "exclusive", "U_black", "U_blue",
                                                                     "////U_Others////"]])
    assert odd.text(odd.decode(np.array([0.1, 0.2, 0.6]))) == ["upper: Others"]
    assert odd.decode(np.array([0.1, 0.2, 0.6]))["upper"] == "////U_Others////"  # data keeps the real name
    with pytest.raises(ValueError, match="'bad' names \\['Nope'\\]"):
        LabelDecoder(names, [["bad", "exclusive", "Age_old", "Nope"]])
    with pytest.raises(ValueError, match="got 3 probabilities for 10"):
        dec.decode(np.zeros(3))


def test_smoothers_by_hand():
    ema = EmaSmoother(0.25)
    for v in (1.0, 0.0, 1.0):
        out = ema.update(np.array([v]))
    assert out[0] == pytest.approx(0.25 * 1 + 0.75 * (0.25 * 0 + 0.75 * 1.0))  # 0.8125
    win = WindowSmoother(2)
    for v in (1.0, 0.0, 0.5):
        out = win.update(np.array([v]))
    assert out[0] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="TEST.EMA_ALPHA"):
        EmaSmoother(0.0)


# ----------------------------------------------------------------------------- pipeline with a fake predictor
def test_tracks_keep_ids_and_labels_average(clip, tmp_path):
    video, det = clip
    pred = FakePredictor()
    opts = VideoOptions(detector="file", det_file=str(det), ema_alpha=0.3, min_track_frames=1, static_filter=False,
                        progress=False)
    s = process_video(video, pred, opts, tmp_path)

    assert SUMMARY_KEYS <= set(s) and s["complete"] and s["frames"] == N_FRAMES
    assert s["people_tracked"] == 2 and s["crops_classified"] == 2 * N_FRAMES
    assert set(s["fps"]) == {"detector", "tracker", "par", "overall", "par_crops"}
    assert all(v is not None and v > 0 for v in s["fps"].values())
    assert set(pred.crop_sizes) == {(100, 40)}  # exactly the boxes, clipped to the frame

    data = json.loads((tmp_path / "clip_tracks.json").read_text())
    assert data["attr_names"] == ATTRS and data["groups"] == GROUPS and data["complete"] is True
    tracks = {}
    for tr in data["tracks"]:
        assert set(tr) == TRACK_KEYS
        assert tr["frames"] == list(range(1, N_FRAMES + 1)) and tr["frames_seen"] == N_FRAMES
        objs = {_which_object(b, f - 1) for f, b in zip(tr["frames"], tr["boxes"])}
        assert len(objs) == 1, f"track {tr['track_id']} jumped between rectangles {objs}"
        tracks[objs.pop()] = tr
    assert set(tracks) == {"red", "blue"} and tracks["red"]["track_id"] != tracks["blue"]["track_id"]

    red, blue = tracks["red"], tracks["blue"]
    # per-frame values alternate (0.9/0.3 and 0.2/0.6); the track average decides the label
    assert red["probs"]["Hat"] == pytest.approx(0.6, abs=1e-4)
    assert blue["probs"]["Backpack"] == pytest.approx(0.4, abs=1e-4)
    assert red["probs"]["c_red"] > 0.9 and blue["probs"]["c_blue"] > 0.9  # crops reach the model as RGB
    assert red["labels"] == {"colour": "c_red", "eyewear": "none", "Gender_female": "female", "present": ["Hat"]}
    assert blue["labels"] == {"colour": "c_blue", "eyewear": "Sunglasses", "Gender_female": "male", "present": []}
    assert red["label_text"] == ["female", "colour: red", "Hat"]
    assert blue["label_text"] == ["male", "colour: blue", "eyewear: Sunglasses"]

    header, rows = _read_csv(tmp_path / "clip_frames.csv")
    assert header == CSV_FIXED + ATTRS and len(rows) == 2 * N_FRAMES
    ids = {r["track_id"] for r in rows}
    assert ids == {str(red["track_id"]), str(blue["track_id"])}
    for r in rows:  # every row's id stays on its rectangle
        box = [int(r[k]) for k in ("x1", "y1", "x2", "y2")]
        want = "red" if r["track_id"] == str(red["track_id"]) else "blue"
        assert _which_object(box, int(r["frame"]) - 1) == want
    # the CSV carries the EMA-smoothed value: recompute Hat of the red track by hand
    ema = None
    for k in range(N_FRAMES):
        v = (0.9, 0.3)[k % 2]
        ema = v if ema is None else 0.3 * v + 0.7 * ema
    last_red = [r for r in rows if r["track_id"] == str(red["track_id"])][-1]
    assert float(last_red["Hat"]) == pytest.approx(ema, abs=1e-4)
    assert last_red["labels"] == "female; colour: red; Hat" and last_red["classified"] == "1"

    cap = cv2.VideoCapture(str(tmp_path / "clip_annotated.mp4"))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == N_FRAMES and (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (320, 240)


def test_check_per_frame_window_and_max_frames(clip, tmp_path):
    video, det = clip
    opts = VideoOptions(detector="file", det_file=str(det.parent), check_per_frame=3, smoothing="window", window=2,
                        min_track_frames=1, static_filter=False,
                        max_frames=12, progress=False)  # det_file as a folder: <stem>.txt inside it
    s = process_video(video, FakePredictor(), opts, tmp_path)
    assert s["frames"] == 12 and s["crops_classified"] == 2 * 4
    # stopped by TEST.MAX_FRAMES before the end: not complete (the footage index keeps it incomplete)
    assert s["status"] == "truncated" and s["complete"] is False
    _, rows = _read_csv(tmp_path / "clip_frames.csv")
    red_id = rows[0]["track_id"]  # frame 1: red comes first in the MOT file
    red = [r for r in rows if r["track_id"] == red_id]
    assert [r["classified"] for r in red] == ["1", "0", "0"] * 4
    # window of the last 2 observations: calls 0,1 -> (0.9+0.3)/2; frames in between repeat the last value
    hats = [float(r["Hat"]) for r in red]
    assert hats[:3] == [pytest.approx(0.9)] * 3 and hats[3:] == [pytest.approx(0.6)] * 9
    data = json.loads((tmp_path / "clip_tracks.json").read_text())
    assert all(t["n_classified"] == 4 and t["frames_seen"] == 12 for t in data["tracks"])


def test_detect_every_holds_tracks_between_detected_frames(clip, tmp_path):
    video, det = clip
    calls = []

    class Counting:
        name = "counting"

        def __init__(self):
            self.inner = build_detector("file", det_file=det)

        def __call__(self, frame, index):
            calls.append(index)
            return self.inner(frame, index)

    opts = VideoOptions(detect_every=3, check_per_frame=2, max_frames=12, min_track_frames=1, static_filter=False,
                        progress=False)
    s = process_video(video, FakePredictor(), opts, tmp_path, detector=Counting())
    assert calls == [1, 4, 7, 10] and s["frames"] == 12
    data = json.loads((tmp_path / "clip_tracks.json").read_text())
    assert data["detect_every"] == 3 and data["frames_detected"] == 4
    # precomputed boxes (the file detector): every frame is used whatever DETECT_EVERY says
    sf = process_video(video, FakePredictor(), VideoOptions(detector="file", det_file=str(det), detect_every=3,
                                                            max_frames=6, progress=False), tmp_path / "file")
    assert sf["crops_classified"] == 2 * 6
    assert json.loads((tmp_path / "file" / "clip_tracks.json").read_text())["detect_every"] == 1
    assert s["crops_classified"] == 2 * 2  # PAR on detected frames 1 and 7 (every 2nd detected frame)
    _, rows = _read_csv(tmp_path / "clip_frames.csv")
    red_id = rows[0]["track_id"]
    red = [r for r in rows if r["track_id"] == red_id]
    assert len(red) == 12 and [r["classified"] for r in red] == ["1"] + ["0"] * 5 + ["1"] + ["0"] * 5
    boxes = [tuple(r[k] for k in ("x1", "y1", "x2", "y2")) for r in red]
    assert boxes[0] == boxes[1] == boxes[2] != boxes[3] == boxes[4] == boxes[5]  # held between detections
    with pytest.raises(ValueError, match="DETECT_EVERY"):
        process_video(video, FakePredictor(), VideoOptions(detect_every=-1), tmp_path / "bad")


def test_overlapped_detection_gives_the_same_outputs_and_surfaces_detector_errors(clip, tmp_path):
    video, det = clip
    outs = {}
    for overlap in (True, False):
        opts = VideoOptions(detector="file", det_file=str(det), overlap=overlap, max_frames=20, progress=False)
        s = process_video(video, FakePredictor(), opts, tmp_path / str(overlap))
        assert s["frames"] == 20 and set(s["fps_after_warmup"]) == set(s["fps"]) and s["par_runtime"] == "torch"
        assert s["fps_after_warmup"]["overall"] > 0
        outs[overlap] = (tmp_path / str(overlap) / "clip_frames.csv").read_text()
    assert outs[True] == outs[False]

    class Broken:
        name = "broken"

        def __call__(self, frame, index):
            if index == 5:
                raise RuntimeError("detector died on frame 5")
            return build_detector("file", det_file=det)(frame, index)

    with pytest.raises(RuntimeError, match="frame 5"):
        process_video(video, FakePredictor(), VideoOptions(detect_every=1, progress=False), tmp_path / "broken", detector=Broken())
    data = json.loads((tmp_path / "broken" / "clip_tracks.json").read_text())
    assert data["status"] == "failed" and data["frames"] == 4


def test_tracks_of_an_embedding_checkpoint_carry_their_unit_mean_embedding(clip, tmp_path):
    video, det = clip
    process_video(video, FakeEmbedder(), VideoOptions(detector="file", det_file=str(det), progress=False), tmp_path)
    data = json.loads((tmp_path / "clip_tracks.json").read_text())
    for t in data["tracks"]:
        e = np.asarray(t["embedding"])
        want = [1, 0, 0] if _which_object(t["boxes"][0], t["frames"][0] - 1) == "red" else [0, 0, 1]  # mean RGB
        assert abs(np.linalg.norm(e) - 1) < 1e-4 and np.abs(e - want).max() < 0.05
    process_video(video, FakePredictor(), VideoOptions(detector="file", det_file=str(det), progress=False),
                  tmp_path / "plain")
    assert all("embedding" not in t for t in json.loads((tmp_path / "plain" / "clip_tracks.json").read_text())["tracks"])


def test_small_boxes_are_skipped(clip, tmp_path):
    video, det = clip
    opts = VideoOptions(detector="file", det_file=str(det), min_box_height=101, progress=False)
    pred = FakePredictor()
    s = process_video(video, pred, opts, tmp_path)
    assert pred.calls == 0 and s["people_tracked"] == 2 and s["tracks_classified"] == 0
    data = json.loads((tmp_path / "clip_tracks.json").read_text())
    assert all(t["probs"] is None and t["labels"] is None for t in data["tracks"])
    _, rows = _read_csv(tmp_path / "clip_frames.csv")
    assert all(r["classified"] == "0" and r["labels"] == "" and r["Hat"] == "" for r in rows)


def test_id_survives_a_detection_gap(tmp_path):
    video, det = make_video(tmp_path)
    lines = det.read_text().splitlines()
    # the red rectangle (MOT id 7) is missed by the "detector" on frames 10-12
    det.write_text("\n".join(l for l in lines if not (l.split(",")[1] == "7" and 10 <= int(l.split(",")[0]) <= 12)))
    s = process_video(video, FakePredictor(), VideoOptions(detector="file", det_file=str(det), progress=False),
                      tmp_path / "out")
    assert s["people_tracked"] == 2
    data = json.loads((tmp_path / "out" / "clip_tracks.json").read_text())
    red = [t for t in data["tracks"] if _which_object(t["boxes"][0], t["frames"][0] - 1) == "red"][0]
    assert red["frames"] == [f for f in range(1, N_FRAMES + 1) if not 10 <= f <= 12]


def _track_of_a_fast_walker(**tracker_kw) -> list[list[int]]:
    """The ids output on each of 12 updates for a 40 x 100 px box stepping 30 px right per detected frame
    (a walker at 5 detected fps): IoU 0.14 with its last box, 1 - IoU x score = 0.87 before the Kalman filter
    has learnt the velocity."""
    from cctv.detections import Detections
    from cctv.tracking import ByteTracker

    o = VideoOptions()  # the shipped defaults (configs/default.py TEST.*)
    kw = {"lost_seconds": o.track_lost_seconds, "match_thresh": o.track_match, **tracker_kw}
    tr, out = ByteTracker(5.0, o.track_high, **kw), []
    for k in range(12):
        t = tr.update(Detections(np.array([[30.0 * k, 50, 30.0 * k + 40, 150]], np.float32), np.array([0.9], np.float32)))
        out.append([int(i) for i in t.ids])
    return out


def test_the_default_tracker_follows_a_walker_seen_at_a_low_detection_rate():
    assert _track_of_a_fast_walker() == [[1]] * 12  # defaults: TEST.TRACK_MATCH_THRESH 0.95, one id throughout
    # ByteTrack's 30 fps setting (0.8) loses the walker after its first frame and, every new box failing the same
    # match, never confirms another track: the person is gone from the output
    assert _track_of_a_fast_walker(match_thresh=0.8) == [[1]] + [[]] * 11
    with pytest.raises(ValueError, match="TEST.TRACK_MATCH_THRESH"):
        VideoOptions(track_match=0.0).validate()
    with pytest.raises(ValueError, match="TEST.TRACK_LOST_SECONDS"):
        VideoOptions(track_lost_seconds=0).validate()


def test_auto_detector_is_the_offline_ssdlite_and_hog_stays_selectable(caplog):
    from cctv.ssdlite import SsdLiteDetector

    with caplog.at_level(logging.INFO):
        assert isinstance(build_detector("auto"), SsdLiteDetector)
    assert "SSDLite" in caplog.text
    det = build_detector("hog")
    assert isinstance(det, HogDetector)
    blank = np.zeros((240, 320, 3), np.uint8)
    out = det(blank, 1)
    assert out.xyxy.shape == (0, 4) and out.scores.shape == (0,)


def test_hog_boxes_are_trimmed_and_scored():
    det = HogDetector()

    class Stub:  # what cv2's detectMultiScale returns: (x, y, w, h) boxes and SVM margins
        def detectMultiScale(self, frame, **kw):
            return np.array([[100, 50, 64, 128], [0, 0, 80, 160]]), np.array([[1.0], [0.0]])

    det.hog = Stub()
    out = det(np.zeros((240, 320, 3), np.uint8), 1)
    np.testing.assert_allclose(out.xyxy[0], [100 + 9.6, 50 + 10.24, 164 - 9.6, 178 - 10.24], atol=1e-4)
    np.testing.assert_allclose(out.scores, [1 - np.exp(-1.0), 0.0], atol=1e-6)


# ----------------------------------------------------------------------------- real checkpoint
@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "best_model.pth")


def test_predictor_matches_the_model(ckpt, tmp_path):
    pred = Predictor.from_checkpoint(ckpt, device="cpu", batch_size=2)
    assert pred.attr_names == ATTRS and [[g.name, g.kind, *g.attrs] for g in pred.groups] == GROUPS
    assert (pred.height, pred.width) == (64, 32) and not pred.model.training
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((120, 50), (64, 32), (30, 90))]
    cv2.imwrite(str(tmp_path / "a.png"), cv2.cvtColor(imgs[0], cv2.COLOR_RGB2BGR))
    probs = pred.predict_images([*imgs, tmp_path / "a.png"])  # 4 images in batches of 2
    # the oracle: PIL's bilinear resize (what training's loader uses), /255, then the bare network
    x = torch.stack([torch.from_numpy(np.asarray(Image.fromarray(im).resize((32, 64), Image.BILINEAR)))
                     .permute(2, 0, 1) for im in imgs]).float() / 255
    with torch.inference_mode():
        ref = torch.sigmoid(pred.loaded.net(x)).numpy()
    assert probs.shape == (4, len(ATTRS)) and probs.dtype == np.float32
    np.testing.assert_allclose(probs[:3], ref, atol=1e-5)
    np.testing.assert_allclose(probs[3], probs[0], atol=1e-6)  # a path reads as RGB like the array
    np.testing.assert_allclose(pred.predict_image(imgs[1]), ref[1], atol=1e-5)
    assert pred.predict_images([]).shape == (0, len(ATTRS))
    with pytest.raises(ValueError, match="uint8"):
        pred.predict_image(imgs[0].astype(np.float32))


def test_main_end_to_end_with_a_real_checkpoint(ckpt, clip, tmp_path):
    test_video = load_script()
    video, det = clip
    cfg = tiny_cfg()
    cfg.TEST.VIDEO_PATH = str(video.parent)  # a folder: every video in it
    cfg.TEST.DETECTOR = "file"
    cfg.TEST.DET_FILE = str(det.parent)
    cfg.TEST.PRETRAINED_WEIGHTS = str(ckpt)
    cfg.TEST.OUTPUT_VIDEO_PATH = str(tmp_path)
    cfg.TEST.MIN_TRACK_FRAMES = 1  # every frame of both tracks drawn and written (plain rectangles: no person
    cfg.TEST.STATIC_FILTER = False  # shape for HOG, hidden until they have moved)
    summaries = test_video.process_videos(cfg)
    assert len(summaries) == 1 and summaries[0]["people_tracked"] == 2 and summaries[0]["complete"]

    data = json.loads((tmp_path / "clip_tracks.json").read_text())
    pred = Predictor.from_checkpoint(ckpt, device="cpu")
    cap = cv2.VideoCapture(str(video))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(f, cv2.COLOR_BGR2RGB))
    for tr in data["tracks"]:
        assert set(tr) == TRACK_KEYS and set(tr["probs"]) == set(ATTRS)
        assert set(tr["labels"]) == {"colour", "eyewear", "Gender_female", "present"}
        assert tr["labels"]["colour"] in GROUPS[0][2:] and tr["labels"]["eyewear"] in ("none", "Glasses", "Sunglasses")
        # the track's probabilities are the mean over its crops
        crops = [frames[f - 1][y1:y2, x1:x2] for f, (x1, y1, x2, y2) in zip(tr["frames"], tr["boxes"])]
        want = pred.predict_images(crops).mean(0)
        np.testing.assert_allclose([tr["probs"][a] for a in ATTRS], want, atol=2e-4)
    header, rows = _read_csv(tmp_path / "clip_frames.csv")
    assert header == CSV_FIXED + ATTRS and len(rows) == 2 * N_FRAMES
    assert all(0.0 <= float(r[a]) <= 1.0 for r in rows for a in ATTRS)


def test_predict_folder_writes_csv(ckpt, tmp_path):
    test_video = load_script()
    crops = tmp_path / "crops"
    (crops / "sub").mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name in ("a.jpg", "b.png", "sub/c.jpg"):
        cv2.imwrite(str(crops / name), rng.integers(0, 256, (80, 40, 3), dtype=np.uint8))
    (crops / "broken.jpg").write_bytes(b"not an image")
    cfg = tiny_cfg()
    cfg.TEST.PREDICT_PATH = str(crops)
    cfg.TEST.PREDICT_CSV = str(tmp_path / "pred.csv")
    cfg.TEST.PRETRAINED_WEIGHTS = str(ckpt)
    out = test_video.predict_folder(cfg)
    assert out["images"] == 3 and len(out["skipped"]) == 1 and out["skipped"][0].endswith("broken.jpg")
    header, rows = _read_csv(tmp_path / "pred.csv")
    assert header == ["image", "labels", *ATTRS]
    assert [r["image"] for r in rows] == ["a.jpg", "b.png", "sub/c.jpg"]
    assert all(r["labels"].split("; ")[0] in ("male", "female") and "; colour: c" not in r["labels"]
               and "; colour: " in r["labels"] for r in rows)
    pred = Predictor.from_checkpoint(ckpt, device="cpu")
    np.testing.assert_allclose([float(rows[1][a]) for a in ATTRS], pred.predict_image(crops / "b.png"), atol=1e-4)
