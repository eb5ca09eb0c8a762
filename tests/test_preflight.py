"""The fast front door: what the config alone shows wrong is answered before torch, OpenCV or the model load."""
from __future__ import annotations

import subprocess
import sys

import pytest

from configs import load_config
from configs.errors import ConfigError
from configs.preflight import is_stream, preflight
from tests.conftest import REPO

LITE0 = REPO / "configs" / "native_lite0.yaml"


def _cfg(*opts: str):
    return load_config(LITE0, list(opts))


def test_a_missing_video_path_is_a_config_error_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match="video path 'nope.mp4' does not exist; set TEST.VIDEO_PATH"):
        preflight(_cfg("MODE", "video", "TEST.VIDEO_PATH", "nope.mp4"))
    with pytest.raises(ConfigError, match="TEST.VIDEO_PATH"):
        preflight(_cfg("MODE", "video"))
    with pytest.raises(ConfigError, match="TEST.VIDEO_NAME: 'b.mp4' not found"):
        preflight(_cfg("MODE", "video", "TEST.VIDEO_PATH", str(tmp_path), "TEST.VIDEO_NAME", "b.mp4"))
    (tmp_path / "a.mp4").write_bytes(b"x")
    preflight(_cfg("MODE", "video", "TEST.VIDEO_PATH", str(tmp_path / "a.mp4")))  # the pipeline reads it later


def test_streams_and_cameras_are_left_to_the_pipeline():
    assert is_stream("rtsp://cam/1") and is_stream("0") and is_stream("file:///x.mp4")
    assert not is_stream("videos/a.mp4")
    preflight(_cfg("MODE", "video", "TEST.VIDEO_PATH", "rtsp://127.0.0.1:1/none"))


def test_a_missing_predict_folder_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="TEST.PREDICT_PATH: 'nope' is not a folder"):
        preflight(_cfg("MODE", "predict", "TEST.PREDICT_PATH", "nope"))
    preflight(_cfg("MODE", "predict", "TEST.PREDICT_PATH", str(tmp_path)))


def test_run_answers_a_missing_video_before_importing_torch():
    code = ("import sys; sys.argv = ['run.py', '--config-file', %r, '--mode', 'video', 'TEST.VIDEO_PATH', 'nope.mp4']\n"
            "import run\nrc = run.cli()\nprint('rc', rc, 'torch' in sys.modules, 'cv2' in sys.modules)" % str(LITE0))
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["rc", "2", "False", "False"], out.stderr
    assert out.stderr.strip().splitlines() == ["error: video path 'nope.mp4' does not exist; set TEST.VIDEO_PATH to "
                                               "a video file or a folder of videos"]
