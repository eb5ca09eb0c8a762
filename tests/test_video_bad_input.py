"""Bad input to the video pipeline: each case is a one-line error of a specific class, or a logged
skip, and whatever was written before a stop is kept."""
from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from tests._video_helpers import ATTRS, FakePredictor, load_script, make_checkpoint, make_video, tiny_cfg
from tools.checkpoint import CheckpointError, save_checkpoint
from tools.inference import Predictor
from cctv import DetectorError, VideoError, VideoOptions, process_video
from cctv.detectors import FileDetector, YoloDetector



@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> tuple[Path, Path]:
    return make_video(tmp_path_factory.mktemp("clip"), n_frames=10)


def _opts(det: Path, **kw) -> VideoOptions:
    # plain rectangles: every frame written (no minimum track length, no person-shape check)
    return VideoOptions(detector="file", det_file=str(det), progress=False,
                        **{"min_track_frames": 1, "static_filter": False, **kw})


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg and msg
    return msg


def _cfg(tmp_path: Path, video_path: str, det: Path | str = "", weights: str = "") -> object:
    cfg = tiny_cfg()
    cfg.TEST.VIDEO_PATH = video_path
    cfg.TEST.DETECTOR = "file"
    cfg.TEST.DET_FILE = str(det)
    cfg.TEST.PRETRAINED_WEIGHTS = weights
    cfg.TEST.OUTPUT_VIDEO_PATH = str(tmp_path / "out")
    return cfg


# ----------------------------------------------------------------------------- videos
def test_missing_path(tmp_path, clip):
    with pytest.raises(VideoError) as e:
        process_video(tmp_path / "nope.mp4", FakePredictor(), _opts(clip[1]), tmp_path)
    assert "video not found" in _one_line(e) and "nope.mp4" in str(e.value)
    with pytest.raises(VideoError) as e:
        load_script().process_videos(_cfg(tmp_path, str(tmp_path / "nope")))
    assert "TEST.VIDEO_PATH" in _one_line(e)
    assert not (tmp_path / "out").exists()


def test_not_a_video(tmp_path, clip):
    fake = tmp_path / "notes.mp4"
    fake.write_text("this is a text file, not a video\n" * 20)
    with pytest.raises(VideoError) as e:
        process_video(fake, FakePredictor(), _opts(clip[1]), tmp_path / "out")
    assert "not a readable video" in _one_line(e)
    empty = tmp_path / "empty.mp4"
    empty.touch()
    with pytest.raises(VideoError) as e:
        process_video(empty, FakePredictor(), _opts(clip[1]), tmp_path / "out")
    assert "empty file" in _one_line(e)


def test_zero_frames(tmp_path, clip):
    video = tmp_path / "zero.avi"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 64))
    w.release()
    assert cv2.VideoCapture(str(video)).isOpened()  # the container opens, it just holds nothing
    with pytest.raises(VideoError) as e:
        process_video(video, FakePredictor(), _opts(clip[1]), tmp_path / "out")
    assert "has no frames" in _one_line(e)


def test_no_people_is_a_logged_skip_with_empty_outputs(tmp_path, caplog):
    video, det = make_video(tmp_path, people=False, n_frames=6)
    assert det.read_text() == ""
    pred = FakePredictor()
    with caplog.at_level(logging.WARNING):
        s = process_video(video, pred, _opts(det), tmp_path / "out")
    assert "no people detected in 6 frames" in caplog.text
    assert s["complete"] and s["frames"] == 6 and s["people_tracked"] == 0 and pred.calls == 0
    assert s["fps"]["par"] is None and s["fps"]["detector"] > 0  # no crop, no PAR speed to report
    data = json.loads((tmp_path / "out" / "clip_tracks.json").read_text())
    assert data["tracks"] == [] and data["frames"] == 6
    lines = (tmp_path / "out" / "clip_frames.csv").read_text().splitlines()
    assert len(lines) == 1 and lines[0].startswith("frame,track_id,")
    assert (tmp_path / "out" / "clip_annotated.mp4").stat().st_size > 0


def test_folder_skips_a_bad_video_and_processes_the_rest(tmp_path, caplog):
    folder = tmp_path / "videos"
    make_video(folder, "good.mp4", n_frames=6)
    (folder / "broken.mp4").write_bytes(b"\x00" * 100)
    (folder / "readme.txt").write_text("not a video, and not a video extension: ignored")
    ckpt = make_checkpoint(tmp_path / "ck.pth")
    with caplog.at_level(logging.WARNING):
        summaries = load_script().process_videos(_cfg(tmp_path, str(folder), folder, str(ckpt)))
    assert [Path(s["video"]).name for s in summaries] == ["good.mp4"]
    assert "skipped broken.mp4" in caplog.text and "not a readable video" in caplog.text
    assert (tmp_path / "out" / "good_tracks.json").is_file() and not (tmp_path / "out" / "broken_tracks.json").exists()


# ----------------------------------------------------------------------------- weights
def test_weights_that_do_not_load(tmp_path, clip):
    video, det = clip
    script = load_script()
    missing = tmp_path / "missing.pth"
    with pytest.raises(CheckpointError) as e:
        script.process_videos(_cfg(tmp_path, str(video), det, str(missing)))
    assert "TEST.PRETRAINED_WEIGHTS" in _one_line(e)

    cfg = _cfg(tmp_path, str(video), det)
    cfg.OUTPUT_DIR, cfg.NAME = str(tmp_path / "exp"), "lite"
    with pytest.raises(CheckpointError) as e:  # no PRETRAINED_WEIGHTS and no trained experiment
        script.process_videos(cfg)
    assert "best_model.pth" in _one_line(e) and "TEST.MODEL_FOLDER_NAME" in str(e.value)

    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"definitely not a torch file")
    with pytest.raises(CheckpointError) as e:
        script.process_videos(_cfg(tmp_path, str(video), det, str(garbage)))
    assert "not a readable checkpoint" in _one_line(e)

    good = torch.load(make_checkpoint(tmp_path / "good.pth"), weights_only=True)
    wrong = dict(good, attr_names=ATTRS[:-1])  # weights for 8 attributes, config says 7
    save_checkpoint(wrong, tmp_path / "wrong.pth")
    with pytest.raises(CheckpointError) as e:
        Predictor.from_checkpoint(tmp_path / "wrong.pth")
    assert "do not fit" in _one_line(e)
    no_cfg = {k: v for k, v in good.items() if k != "cfg"}
    save_checkpoint(no_cfg, tmp_path / "nocfg.pth")
    with pytest.raises(CheckpointError) as e:
        Predictor.from_checkpoint(tmp_path / "nocfg.pth")
    assert "no 'cfg'" in _one_line(e)
    assert not (tmp_path / "out").exists()  # nothing written before the weights were known to load


def test_detector_inputs(tmp_path):
    with pytest.raises(DetectorError) as e:
        FileDetector(tmp_path / "nope.txt")
    assert "TEST.DET_FILE" in _one_line(e)
    bad = tmp_path / "bad.txt"
    bad.write_text("1,1,10,10,20,40,0.9\n2,1,ten,10,20,40,0.9\n")
    with pytest.raises(DetectorError) as e:
        FileDetector(bad)
    assert f"{bad}:2:" in _one_line(e)
    with pytest.raises(DetectorError) as e:
        YoloDetector(tmp_path / "yolov8n.pt")  # never downloaded: a missing file is an error
    assert "TEST.YOLO_MODEL" in _one_line(e) and "not found" in str(e.value)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"junk")
    with pytest.raises(DetectorError) as e:  # without ultralytics: how to install it; with it: cannot load
        YoloDetector(junk)
    assert "ultralytics" in _one_line(e) or "cannot load" in str(e.value)


# ----------------------------------------------------------------------------- stopping early
class _InterruptingPredictor(FakePredictor):
    def predict_images(self, images):
        if self.calls == 4:
            raise KeyboardInterrupt
        return super().predict_images(images)


def test_ctrl_c_keeps_json_and_csv(tmp_path, clip, caplog):
    video, det = clip
    with pytest.raises(KeyboardInterrupt):
        process_video(video, _InterruptingPredictor(), _opts(det), tmp_path / "out")
    data = json.loads((tmp_path / "out" / "clip_tracks.json").read_text())
    assert data["complete"] is False and data["status"] == "interrupted" and data["frames"] == 5
    assert len(data["tracks"]) == 2 and all(t["n_classified"] == 4 for t in data["tracks"])
    with open(tmp_path / "out" / "clip_frames.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted({int(r["frame"]) for r in rows}) == [1, 2, 3, 4]

    # through main: the interrupted video's summary comes back, no traceback
    cfg = _cfg(tmp_path, str(video), det, "unused")
    cfg.TEST.CHECK_PER_FRAME = 1  # PAR on every frame: the predictor interrupts on its 5th call
    with caplog.at_level(logging.WARNING):
        summaries = load_script().process_videos(cfg, predictor=_InterruptingPredictor())
    assert "interrupted by the user" in caplog.text
    assert len(summaries) == 1 and summaries[0]["status"] == "interrupted"


def test_failure_mid_video_still_writes_json(tmp_path, clip):
    video, det = clip

    class Broken(FakePredictor):
        def predict_images(self, images):
            if self.calls == 2:
                raise RuntimeError("boom")
            return super().predict_images(images)

    with pytest.raises(RuntimeError, match="boom"):
        process_video(video, Broken(), _opts(det), tmp_path)
    data = json.loads((tmp_path / "clip_tracks.json").read_text())
    assert data["status"] == "failed" and data["frames"] == 3
    assert np.isclose(data["tracks"][0]["probs"]["Gender_female"], 0.8) or np.isclose(
        data["tracks"][0]["probs"]["Gender_female"], 0.2)
