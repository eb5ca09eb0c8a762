"""Pre-flight checks: what a mode can verify from the config alone, before the heavy imports (torch,
OpenCV, the model) and the model load. run.py calls ``preflight(cfg)`` right after the config loads, so
a missing input answers in well under a second instead of after the model has loaded.

A check is a function of the config that raises ``ConfigError`` with one line naming the key and the
fix; ``@check("mode", ...)`` registers it. Checks here must stay cheap: the standard library only.
The application keeps its own checks (it is also called as a library); these only answer sooner.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from configs.errors import ConfigError

Check = Callable[[Any], None]
CHECKS: dict[str, list[Check]] = {}


def check(*modes: str) -> Callable[[Check], Check]:
    """Register a pre-flight check for ``modes``."""
    def register(fn: Check) -> Check:
        for mode in modes:
            CHECKS.setdefault(mode, []).append(fn)
        return fn
    return register


def preflight(cfg: Any) -> None:
    """Run the checks registered for ``cfg.MODE`` (ConfigError on the first that fails)."""
    for fn in CHECKS.get(cfg.MODE, []):
        fn(cfg)


STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "file:")


def is_stream(source: str) -> bool:
    """A stream URL (``rtsp://...``, ``file:...``: STREAM_SCHEMES) or a camera index: nothing on disk to check."""
    return source.lower().startswith(STREAM_SCHEMES) or (source.isdigit() and not Path(source).exists())


def video_source_problem(path: str, name: str = "") -> str | None:
    """What is wrong with TEST.VIDEO_PATH / TEST.VIDEO_NAME as one line, or None (streams are not checked).
    Shared by the pre-flight check and ``cctv.pipeline.list_videos``."""
    if path and is_stream(path):
        return None
    p = Path(path)
    if not path or not p.exists():
        return f"video path '{path}' does not exist; set TEST.VIDEO_PATH to a video file or a folder of videos"
    if name and p.is_dir() and not (p / name).is_file():
        return f"TEST.VIDEO_NAME: '{name}' not found in {p}"
    return None


@check("video")
def video_source(cfg: Any) -> None:
    """TEST.VIDEO_PATH exists (a file or a folder), and TEST.VIDEO_NAME is in that folder when given."""
    problem = video_source_problem(str(cfg.TEST.VIDEO_PATH), str(cfg.TEST.VIDEO_NAME))
    if problem:
        raise ConfigError(problem)


@check("predict")
def predict_folder(cfg: Any) -> None:
    """TEST.PREDICT_PATH is a folder."""
    if not cfg.TEST.PREDICT_PATH or not Path(cfg.TEST.PREDICT_PATH).is_dir():
        raise ConfigError(f"TEST.PREDICT_PATH: '{cfg.TEST.PREDICT_PATH}' is not a folder; give a folder of person "
                          "crops")
