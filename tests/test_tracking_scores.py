"""Detection and tracking against ground truth: the motmetrics scorer on a hand-computed miniature, the
<stem>_mot.txt writer and reader, zones, the minimum track length, the static non-person filter, gap
interpolation, and the honest run status of a truncated file / a skipped video."""
from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests._video_helpers import FakePredictor
from cctv.filters import ZoneError, ZoneFilter, has_moved, interpolate_gaps, parse_zones, person_shape_score
from cctv.mot import MotFileError, MotRows, read_mot, score_detections, score_tracks, write_mot
from cctv.pipeline import VideoOptions, process_video


def _rows(rows: list[tuple]) -> MotRows:
    a = np.asarray(rows, float).reshape(-1, 6)
    return MotRows(a[:, 0].astype(int), a[:, 1].astype(int), a[:, 2:6], np.ones(len(a)))


A, B, FP = (0, 0, 10, 100), (100, 0, 10, 200), (300, 0, 10, 50)  # x, y, w, h: heights 100, 200, 50


def test_scorer_on_a_hand_computed_miniature():
    # ground truth: person 1 at A and person 2 at B on frames 1-4
    gt = _rows([(f, 1, *A) for f in range(1, 5)] + [(f, 2, *B) for f in range(1, 5)])
    # hypotheses: h1 on A frames 1-3, then h3 on A (1 switch); h2 on B frames 1, 2, 4 (1 miss at frame 3);
    # h9 a false positive on frame 3
    hyp = _rows([(1, 1, *A), (2, 1, *A), (3, 1, *A), (4, 3, *A), (1, 2, *B), (2, 2, *B), (4, 2, *B), (3, 9, *FP)])
    s = score_tracks(gt, hyp)
    # 8 objects, 8 predictions, 7 matched: recall = precision = 7/8; MOTA = 1 - (1 miss + 1 FP + 1 switch) / 8
    assert s["recall"] == pytest.approx(7 / 8) and s["precision"] == pytest.approx(7 / 8)
    assert s["mota"] == pytest.approx(1 - 3 / 8)
    assert (s["num_switches"], s["num_misses"], s["num_false_positives"], s["num_objects"]) == (1, 1, 1, 8)
    # IDF1: best one-to-one ids 1<->h1 (3 frames), 2<->h2 (3 frames): 2 x 6 / (8 + 8)
    assert s["idf1"] == pytest.approx(0.75)
    h = s["by_height"]
    assert (h["64-128"]["gt"], h["64-128"]["recall"], h["64-128"]["precision"]) == (4, 1.0, 1.0)
    assert (h[">128"]["gt"], h[">128"]["recall"], h[">128"]["precision"]) == (4, 0.75, 1.0)
    assert (h["<64"]["gt"], h["<64"]["recall"], h["<64"]["hyp"], h["<64"]["precision"]) == (0, None, 1, 0.0)
    # a frame nobody is on still counts when n_frames covers it; an empty hypothesis misses everything
    empty = score_tracks(gt, _rows([]), n_frames=6)
    assert empty["recall"] == 0.0 and empty["num_misses"] == 8 and empty["mota"] == 0.0


def test_detector_scored_on_the_frames_it_ran_on():
    gt = _rows([(f, 1, *A) for f in range(1, 5)])
    per = {1: np.array([[0, 0, 10, 100]]), 3: np.array([[0, 0, 10, 100], [300, 0, 310, 50]])}
    s = score_detections(gt, per)  # frames 2 and 4 were not detected: not counted as misses
    assert s["frames"] == 2 and s["recall"] == 1.0 and s["precision"] == pytest.approx(2 / 3)


def test_mot_file_round_trips(tmp_path):
    rows = [(3, 7, (10.5, 20.0, 50.25, 120.0), 0.9), (1, 2, (0, 0, 5, 9), 1.0), (1, 1, (4, 4, 8, 8), 0.5)]
    path = tmp_path / "clip_mot.txt"
    assert write_mot(path, rows) == 3
    lines = path.read_text().splitlines()
    assert lines[0] == "1,1,4.00,4.00,4.00,4.00,0.5000,-1,-1,-1"  # sorted by frame, then id; 1-based frames
    back = read_mot(path)
    assert back.frames.tolist() == [1, 1, 3] and back.ids.tolist() == [1, 2, 7]
    np.testing.assert_allclose(back.xywh[2], [10.5, 20.0, 39.75, 100.0])
    np.testing.assert_allclose(back.scores, [0.5, 1.0, 0.9])


def test_ground_truth_filter_and_bad_files(tmp_path):
    gt = tmp_path / "gt.txt"
    gt.write_text("1,1,0,0,10,20,1,1,1\n1,2,0,0,10,20,0,1,1\n1,3,0,0,10,20,1,7,1\n2,4,0,0,10,20,1,-1,0.5\n")
    assert read_mot(gt, ground_truth=True).ids.tolist() == [1, 4]  # conf 0 and class 7 (static person) out
    with pytest.raises(MotFileError, match="not found"):
        read_mot(tmp_path / "missing.txt", ground_truth=True)
    gt.write_text("1,1,0,0,10,20,1,1,1\n1,x,0,0,10,20\n")
    with pytest.raises(MotFileError, match=r"gt.txt:2: expected numbers"):
        read_mot(gt)
    gt.write_text("0,1,0,0,10,20\n")
    with pytest.raises(MotFileError, match="1-based"):
        read_mot(gt)


def test_zones_include_and_exclude():
    boxes = np.array([[10, 10, 30, 90], [110, 10, 130, 90], [150, 100, 170, 190], [10, 120, 30, 150]], np.float32)
    # include: the left half (relative); exclude: a pixel square around the third box's feet
    f = ZoneFilter([{"include": [[0, 0], [0.5, 0], [0.5, 1], [0, 1]]}], 200, 200)
    assert f.keep(boxes).tolist() == [True, False, False, True]
    f = ZoneFilter([{"exclude": [[140, 180], [180, 180], [180, 199], [140, 199]]}], 200, 200)
    assert f.keep(boxes).tolist() == [True, True, False, True]
    f = ZoneFilter([{"include": [[0, 0], [1, 0], [1, 0.5], [0, 0.5]]},
                    {"exclude": [[0, 0], [60, 0], [60, 100], [0, 100]]}], 200, 200)
    assert f.keep(boxes).tolist() == [False, True, False, False]  # feet at y 90 inside the top half only for 1, 2
    assert not ZoneFilter([], 200, 200) and ZoneFilter([], 200, 200).keep(boxes).all()
    for bad, msg in (([{"inside": [[0, 0], [1, 0], [1, 1]]}], "include"), ([{"include": [[0, 0], [1, 1]]}], "3"),
                     ([{"exclude": "left"}], "points"), (["0,0 1,0 1,1"], "include"),
                     ([{"include": [[0, 0], [-5, 0], [1, 1]]}], "negative")):
        with pytest.raises(ZoneError, match=msg):
            parse_zones(bad)
    with pytest.raises(ZoneError):
        VideoOptions(zones=[{"include": [[0, 0]]}]).validate()


def test_ssd_input_sizes_keep_at_most_coco_proportions():
    from cctv.ssdlite import input_size

    assert input_size(640, 480, 480) == (480, 352) and input_size(1920, 1080, 480) == (480, 352)  # 16:9 -> 4:3
    assert input_size(480, 640, 480) == (352, 480) and input_size(1920, 1080, 300) == (300, 300)


def test_gap_interpolation_and_motion():
    f, b, s = interpolate_gaps([1, 2, 6, 20], [[0, 0, 10, 10], [0, 0, 10, 10], [40, 0, 50, 10], [0, 0, 1, 1]],
                               [0.9, 0.8, 0.6, 0.7], max_gap=5)
    assert f == [1, 2, 3, 4, 5, 6, 20] and b[3] == [20, 0, 30, 10] and s[2] == 0.6
    assert has_moved((0, 0, 10, 100), (16, 0, 26, 100)) and not has_moved((0, 0, 10, 100), (14, 2, 24, 102))


def _scene(folder: Path, n: int = 30) -> tuple[Path, Path]:
    """A grey box (a ticket machine) that never moves, a rectangle walking right, a 2-frame blip."""
    folder.mkdir(parents=True, exist_ok=True)
    video, det = folder / "scene.mp4", folder / "scene.txt"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (320, 240))
    lines = []
    for t in range(n):
        img = np.full((240, 320, 3), 30, np.uint8)
        img[20:100, 260:300] = 150
        img[120:220, 10 + 6 * t:50 + 6 * t] = (0, 0, 255)
        writer.write(img)
        lines += [f"{t + 1},1,260,20,40,80,0.9", f"{t + 1},2,{10 + 6 * t},120,40,100,0.9"]
        if 10 <= t < 12:
            lines.append(f"{t + 1},3,150,20,30,60,0.9")
    writer.release()
    det.write_text("\n".join(lines) + "\n")
    return video, det


def test_static_objects_and_short_tracks_are_not_reported(tmp_path):
    video, det = _scene(tmp_path / "in")
    frame = np.full((240, 320, 3), 30, np.uint8)
    frame[20:100, 260:300] = 150
    assert person_shape_score(frame, (260, 20, 300, 100)) < -2.0  # a plain box has no person shape
    opts = VideoOptions(detector="file", det_file=str(det), progress=False)  # shipped: MIN_TRACK_FRAMES 5, filter on
    s = process_video(video, FakePredictor(), opts, tmp_path / "out")
    assert s["people_tracked"] == 1 and s["tracks_dropped"] == 2 and s["status"] == "complete"
    mot = read_mot(tmp_path / "out" / "scene_mot.txt")
    assert set(mot.xywh[:, 1].tolist()) == {120.0}  # only the walker
    assert mot.frames.tolist() == list(range(1, 31))  # its first frames too (held back until it had moved)
    rows = (tmp_path / "out" / "scene_frames.csv").read_text().splitlines()[1:]
    # drawn from its 5th frame on (MIN_TRACK_FRAMES); it has moved 24 px (> 0.15 x 100) by then, so the plain
    # rectangle's lack of a person shape does not hide it
    assert len(rows) == 30 - 4 and rows[0].startswith("5,")
    off = VideoOptions(detector="file", det_file=str(det), progress=False, static_filter=False, min_track_frames=1)
    assert process_video(video, FakePredictor(), off, tmp_path / "all")["people_tracked"] == 3


def test_truncated_file_is_incomplete_and_a_skipped_video_is_named(tmp_path, caplog):
    from cctv.app import _log_done

    path = tmp_path / "cut.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (160, 120))
    for t in range(53):
        img = np.full((120, 160, 3), 30, np.uint8)
        img[20:80, 10 + t:30 + t] = (0, 0, 255)
        writer.write(img)
    writer.release()
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * 0.55)])
    s = process_video(path, FakePredictor(), VideoOptions(detector="hog", progress=False), tmp_path / "out")
    assert s["status"] == "incomplete" and not s["complete"] and s["frames_expected"] == 53
    assert 10 < s["frames"] < 53
    whole = process_video(tmp_path / "out" / "cut_annotated.mp4", FakePredictor(),
                          VideoOptions(detector="hog", progress=False), tmp_path / "again")
    assert whole["status"] == "complete" and whole["frames"] == s["frames"]
    with caplog.at_level(logging.INFO):
        _log_done([s], ["broken.mp4"], tmp_path)
    assert f"not complete: cut.avi (incomplete, {s['frames']} of 53 frames)" in caplog.text
    assert "skipped 1: broken.mp4" in caplog.text


def test_benchmark_command_scores_a_clip_against_its_ground_truth(tmp_path, capsys):
    from scripts.benchmark_tracking import main
    from tests._video_helpers import make_checkpoint, make_video
    from tests.conftest import REPO

    video, det = make_video(tmp_path / "in")  # two rectangles, 30 frames; the MOT file doubles as ground truth
    ckpt = make_checkpoint(tmp_path / "m.pth")
    args = ["--config-file", str(REPO / "configs" / "demo.yaml"), "--video", str(video), "--out", str(tmp_path / "out"),
            "TEST.PRETRAINED_WEIGHTS", str(ckpt), "TEST.DETECTOR", "file", "TEST.DET_FILE", str(det),
            "TEST.STATIC_FILTER", "False", "TEST.PAR_RUNTIME", "torch"]
    with pytest.raises(MotFileError, match="not found"):
        main(args[:4] + ["--gt", str(tmp_path / "none.txt")] + args[4:])
    r = main(args[:4] + ["--gt", str(det), "--json", str(tmp_path / "r.json")] + args[4:])
    t = r["tracks"]
    # the tracks' first MIN_TRACK_FRAMES - 1 frames (not drawn) are in the MOT file too: a perfect score
    assert (t["recall"], t["precision"], t["mota"], t["idf1"], t["num_switches"]) == (1.0, 1.0, 1.0, 1.0, 0)
    assert t["by_height"]["64-128"]["gt"] == 60 and r["detector"]["recall"] == 1.0 and r["frames"] == 30
    out = capsys.readouterr().out
    assert "MOTA 1.000 IDF1 1.000 ID switches 0" in out and "TEST.MIN_TRACK_FRAMES 5" in out
    assert (tmp_path / "r.json").is_file()


def test_detection_rate_follows_the_clip_fps(tmp_path):
    from cctv.detectors import build_detector
    from tests._video_helpers import make_video

    video, det = make_video(tmp_path / "in", n_frames=12)  # a 10 fps clip
    calls: list[int] = []

    class Counting:
        name = "counting"

        def __init__(self) -> None:
            self.inner = build_detector("file", det_file=det)

        def __call__(self, frame, index):
            calls.append(index)
            return self.inner(frame, index)

    process_video(video, FakePredictor(), VideoOptions(detect_every_min=2, progress=False), tmp_path / "a",
                  detector=Counting())
    assert calls == list(range(1, 13, 2))  # DETECT_HZ 8 on a 10 fps clip, at most every 2nd frame: every 2nd
    calls.clear()
    process_video(video, FakePredictor(), VideoOptions(detect_hz=10.0, progress=False), tmp_path / "d",
                  detector=Counting())
    assert calls == list(range(1, 13))  # DETECT_HZ 10 on a 10 fps clip: every frame, not every 2nd
    calls.clear()
    process_video(video, FakePredictor(), VideoOptions(detect_hz=3.0, progress=False), tmp_path / "b",
                  detector=Counting())
    assert calls == [1, 4, 7, 10]  # round(10 fps / 3 Hz) = every 3rd frame
    calls.clear()
    process_video(video, FakePredictor(), VideoOptions(detect_every=2, progress=False), tmp_path / "c",
                  detector=Counting())
    assert calls == [1, 3, 5, 7, 9, 11]  # an explicit DETECT_EVERY wins


def test_detection_interval_follows_the_fps_within_the_cost_cap():
    from cctv.pipeline import detection_interval

    # the shipped DETECT_HZ 8 / DETECT_EVERY_MIN 2: TUD's 25 fps every 3rd frame, 7-10 fps clips every 2nd
    assert [detection_interval(fps, 8.0, 2) for fps in (25.0, 10.0, 7.0, 30.0)] == [3, 2, 2, 4]
    assert [detection_interval(fps, 8.0, 1) for fps in (10.0, 6.0)] == [1, 1]  # no cap: slow clips every frame
    assert detection_interval(25.0, 6.0) == 4 and detection_interval(10.0, 3.0) == 3


def test_benchmark_commands_end_user_mistakes_in_one_line(tmp_path, capsys):
    """The scripts share run.py's error policy: a user mistake is one line and exit code 2, not a traceback."""
    from configs.errors import exit_code_of
    from scripts.benchmark_appearance import main as appearance_main
    from scripts.benchmark_tracking import main as tracking_main

    rc = exit_code_of(lambda: tracking_main(["--config-file", "configs/native_lite0.yaml", "--video", "x.mp4",
                                             "TEST.SSD_SCALES"]))
    err = capsys.readouterr().err
    assert rc == 2 and err.strip() == "error: overrides come in KEY VALUE pairs; 'TEST.SSD_SCALES' has no value"
    rc = exit_code_of(lambda: appearance_main(["--video", "x.mp4", "--gt", str(tmp_path / "none.txt")]))
    err = capsys.readouterr().err
    assert rc == 2 and "none.txt' not found" in err and len(err.strip().splitlines()) == 1


def test_a_detector_that_asks_for_half_the_rate_is_called_half_as_often():
    from cctv.detections import Detections
    from cctv.pipeline import _detect_each

    class Switching:
        every_factor = 1

        def __init__(self):
            self.calls = []

        def __call__(self, frame, index):
            self.calls.append(index)
            if len(self.calls) == 2:
                self.every_factor = 2  # as SsdLiteDetector does once a clip's people measure small
            return Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32))

    det = Switching()
    out = list(_detect_each((np.zeros((4, 4, 3), np.uint8) for _ in range(20)), det, every=3))
    assert det.calls == [1, 4, 10, 16] and len(out) == 20
    assert [i for i, (_, d, _) in enumerate(out, 1) if d is not None] == det.calls


def test_mosaic_proxy_scales_the_ground_truth_and_keeps_ids_apart(tmp_path):
    from scripts.benchmark_tracking import make_mosaic

    video = tmp_path / "walk.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (160, 120))
    lines = []
    for f in range(1, 31):
        img = np.zeros((120, 160, 3), np.uint8)
        img[20:100, 4 * f:4 * f + 20] = 255
        writer.write(img)
        lines.append(f"{f},7,{4 * f},20,20,80,1,1,1")
    writer.release()
    (tmp_path / "gt.txt").write_text("\n".join(lines) + "\n")
    v, g = make_mosaic(str(video), str(tmp_path / "gt.txt"), tmp_path / "out", k=2, offset=5)
    cap = cv2.VideoCapture(v)
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    ok, first = cap.read()
    cap.release()
    assert n == 30 - 3 * 5 and first.shape[:2] == (120, 160)
    gt = read_mot(g, ground_truth=True)
    assert sorted(set(gt.ids.tolist())) == [7, 15, 23, 31]  # one id per tile: 7 + q * (max id + 1)
    tile3 = gt.xywh[(gt.frames == 1) & (gt.ids == 31)][0]  # bottom-right tile shows source frame 1 + 15
    np.testing.assert_allclose(tile3, [4 * 16 / 2 + 80, 20 / 2 + 60, 10, 40])
    assert first[60 + 30, 80 + 32 + 5].mean() > 200  # the walker drawn where its box says (bottom-right tile)
    with pytest.raises(Exception, match="--mosaic 2 --mosaic-offset 50"):
        make_mosaic(str(video), str(tmp_path / "gt.txt"), tmp_path / "out", k=2, offset=50)


def test_tracker_keeps_lost_tracks_the_same_seconds_after_a_rate_change():
    from cctv.tracking import ByteTracker

    trk = ByteTracker(8.0, 0.3, lost_seconds=2.0, match_thresh=0.95, appearance=True)
    assert trk.tracker.max_time_lost == 16
    trk.set_fps(4.0)  # the detector now runs half as often: 2 s are 8 updates
    assert trk.tracker.max_time_lost == 8 and trk.linker.max_lost == 8 and trk.linker.fps == 4.0
