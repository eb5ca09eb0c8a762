"""The index's own media: browser-playable H.264 (yuv420p, faststart MP4) copies of the annotated videos.

OpenCV's writer in opencv-python-headless has no H.264 encoder ('avc1' fails to open) and its 'mp4v'
output is not played by browsers, so the copy is made with PyAV, whose wheels ship FFmpeg with libx264.
It runs once per video after the video is processed, outside the per-frame loop.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

MAX_HEIGHT = 720  # larger videos are scaled down for the browser copy


def _even(v: float) -> int:
    return max(2, int(round(v / 2)) * 2)


def _out_size(width: int, height: int, max_height: int) -> tuple[int, int]:
    scale = min(1.0, max_height / max(height, 1))
    return _even(width * scale), _even(height * scale)


def transcode_h264(src: Path, dst: Path, max_height: int = MAX_HEIGHT, fps: float | None = None) -> bool:
    """``src`` (any video FFmpeg reads) -> ``dst`` as H.264 MP4 a browser plays; False (logged) on failure.
    Written to a temporary name first: a killed run never leaves half a file under ``dst``."""
    import av  # PyAV: FFmpeg with libx264 in its wheels

    tmp = dst.with_name(dst.name + ".part")
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        with av.open(str(src)) as inp, av.open(str(tmp), "w", format="mp4",
                                                options={"movflags": "+faststart"}) as out:
            vin = inp.streams.video[0]
            rate = _rate(fps or float(vin.average_rate or 25))
            stream = out.add_stream("libx264", rate=rate)
            stream.codec_context.time_base = 1 / rate
            stream.width, stream.height = _out_size(vin.codec_context.width, vin.codec_context.height, max_height)
            stream.pix_fmt = "yuv420p"
            stream.options = {"preset": "veryfast", "crf": "26"}
            for i, frame in enumerate(inp.decode(vin)):  # frame i at i / fps: the pipeline's frame clock
                img = frame.reformat(width=stream.width, height=stream.height, format="yuv420p")
                img.pts, img.time_base = i, 1 / rate
                out.mux(stream.encode(img))
            out.mux(stream.encode(None))
        os.replace(tmp, dst)
        return True
    except Exception as e:  # noqa: BLE001 - the index keeps the tracks even without a playable copy
        log.warning("could not make a browser-playable copy of %s: %s: %s", src, type(e).__name__, e)
        tmp.unlink(missing_ok=True)
        return False


def codec_of(path: Path) -> tuple[str, int]:
    """(codec name, height) of the first video stream; ("", 0) when unreadable."""
    import av

    try:
        with av.open(str(path)) as c:
            ctx = c.streams.video[0].codec_context
            return ctx.name, int(ctx.height)
    except Exception:  # noqa: BLE001 - not a video FFmpeg reads
        return "", 0


def make_playable(path: Path) -> bool:
    """Re-encode ``path`` (OpenCV's mp4v) in place as H.264 at its own size; True when it is H.264 after."""
    if codec_of(path)[0] == "h264":
        return True
    tmp = path.with_name(path.stem + ".h264.mp4")
    if not transcode_h264(path, tmp, max_height=1 << 16):
        return False
    os.replace(tmp, path)
    return True


def browser_copy(src: Path, dst: Path, fps: float | None = None) -> bool:
    """``dst``: ``src`` itself when it is already H.264 of at most MAX_HEIGHT lines, else an H.264 re-encode."""
    import shutil

    name, height = codec_of(src)
    if name == "h264" and height <= MAX_HEIGHT:
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(dst.name + ".part")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
        return True
    return transcode_h264(src, dst, fps=fps)


def _rate(fps: float):
    from fractions import Fraction

    return Fraction(fps).limit_denominator(1001)
