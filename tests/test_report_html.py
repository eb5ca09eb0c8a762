"""The per-video HTML report: written by the pipeline, self-contained, and filterable in a real browser
(Debian's chromium, headless: the filter comes from the URL hash, the DOM and a screenshot are checked)."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests._video_helpers import FakePredictor, make_video
from cctv import VideoOptions, process_video
from cctv.report import render_report, write_report

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def processed(tmp_path_factory) -> Path:
    """The synthetic clip through the pipeline: a red track (female, Hat) and a blue one (male, Sunglasses)."""
    root = tmp_path_factory.mktemp("report")
    video, det = make_video(root / "in")
    opts = VideoOptions(detector="file", det_file=str(det), progress=False, write_video=False)
    process_video(video, FakePredictor(), opts, root / "out")
    return root / "out"


def _ids(data: dict) -> dict[str, int]:
    return {("red" if t["labels"]["colour"] == "c_red" else "blue"): t["track_id"] for t in data["tracks"]}


def test_pipeline_writes_a_self_contained_report(processed):
    data = json.loads((processed / "clip_tracks.json").read_text())
    page = processed / "clip_report" / "index.html"
    assert data["outputs"]["report"] == str(page) and page.is_file()
    html = page.read_text(encoding="utf-8")
    assert not re.search(r"(src|href)=\"(https?:|//)", html) and "<link" not in html  # nothing fetched
    assert html.count('<div class="card"') == 2 and html.count("data:image/jpeg;base64,") == 2
    for key in ("colour", "eyewear", "Gender_female", "Hat", "Backpack"):
        assert f'data-key="{key}"' in html
    ids = _ids(data)
    for tid in ids.values():  # the thumbnails the pipeline stored per track
        thumb = processed / data["thumbs"][str(tid)]["file"]
        assert cv2.imread(str(thumb)).shape[:2] == (100, 40)
    assert "0:00.0 – 0:02.9 (frames 1–30, seen 30)" in html  # 10 fps
    # no thumbnails and a track never classified: still renders
    bare = {**data, "thumbs": {}, "tracks": data["tracks"] + [{**data["tracks"][0], "track_id": 99, "labels": None,
                                                               "label_text": []}]}
    page = render_report(bare, processed)
    assert "no crop" in page and "not classified" in page and page.count('<div class="card"') == 3
    assert write_report(processed / "clip_tracks.json", processed / "again.html").is_file()


def _browser() -> str:
    for name in BROWSERS:
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip("no headless browser: install Debian's chromium (apt-get install chromium); .ci/run does")


def _run(browser: str, tmp: Path, *args: str) -> str:
    cmd = [browser, *FLAGS, f"--user-data-dir={tmp / 'profile'}", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def _shown(dom: str) -> tuple[set[int], int]:
    visible = {int(m.group(1)) for m in re.finditer(r'<div class="card" id="t(\d+)">', dom)}
    return visible, int(re.search(r'id="shown">(\d+)<', dom).group(1))


def test_filter_in_headless_chromium(processed, tmp_path):
    browser = _browser()
    ids = _ids(json.loads((processed / "clip_tracks.json").read_text()))
    url = (processed / "clip_report" / "index.html").resolve().as_uri()
    assert _shown(_run(browser, tmp_path, "--dump-dom", url)) == (set(ids.values()), 2)
    assert _shown(_run(browser, tmp_path, "--dump-dom", url + "#colour=c_red")) == ({ids["red"]}, 1)
    both = url + "#Gender_female=male&eyewear=Sunglasses"
    assert _shown(_run(browser, tmp_path, "--dump-dom", both)) == ({ids["blue"]}, 1)
    assert _shown(_run(browser, tmp_path, "--dump-dom", url + "#Hat=yes&Gender_female=male")) == (set(), 0)
    # what a person sees: the red crop, not the blue one
    shot = tmp_path / "red.png"
    _run(browser, tmp_path, f"--screenshot={shot}", "--window-size=900,600", url + "#colour=c_red")
    img = cv2.imread(str(shot))
    assert img is not None and img.shape[:2] == (600, 900)
    red = (img[..., 2] > 200) & (img[..., 1] < 60) & (img[..., 0] < 60)
    blue = (img[..., 0] > 200) & (img[..., 1] < 60) & (img[..., 2] < 60)
    assert red.sum() > 2000 and blue.sum() == 0, (int(red.sum()), int(blue.sum()))
    assert np.unique(img.reshape(-1, 3), axis=0).shape[0] > 20  # text and controls rendered, not a blank page
