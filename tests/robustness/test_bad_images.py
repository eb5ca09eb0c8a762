"""Bad image files: unusable ones are skipped with a logged reason and counted (or are an error, per
DATASET.ON_BAD_IMAGE); odd-but-usable colour modes are converted to RGB."""
from __future__ import annotations

import csv
import logging
import re

import numpy as np
import pytest
import torch

from dataset.base import DataError
from tests.robustness._helpers import exp_dir, jpeg_bytes, load, make_native, native_overrides, png_bytes, tiny_yaml

# ID -> expected skip reason (a regex of the text after "skipping image <path>: ")
BAD = {
    "c9_v1_0_0": r"file not found",
    "c9_v1_1_0": r"zero-byte file",
    "c9_v1_2_0": r"unreadable \((?i:.*truncated)",  # PIL's words vary: "image file is truncated", "Truncated File Read"
    "c9_v1_3_0": r"not an image file",
    "c9_v1_4_0": r"400x300 pixels is over DATASET\.MAX_IMAGE_PIXELS=50000",
}
# ID -> the RGB value the converted image must hold
CONVERTED = {"c9_v1_5_0": (100, 100, 100), "c9_v1_6_0": (255, 0, 0), "c9_v1_7_0": (0, 0, 255),
             "c9_v1_8_0": (0, 160, 0), "c9_v1_9_0": (50, 50, 50)}
MAX_PIXELS = 50_000


@pytest.fixture(scope="module")
def native(tmp_path_factory):
    import io

    from PIL import Image

    good = jpeg_bytes(size=(64, 128))
    palette = Image.new("RGB", (32, 64), (0, 160, 0)).convert("P")
    buf = io.BytesIO()
    palette.save(buf, "PNG")
    special = {
        "c9_v1_0_0": None,  # listed in the sheet, absent on disk
        "c9_v1_1_0": b"",
        "c9_v1_2_0": good[: len(good) // 2],
        "c9_v1_3_0": b"this is a text file named .jpg\n",
        "c9_v1_4_0": jpeg_bytes(size=(400, 300)),
        "c9_v1_5_0": jpeg_bytes("L", color=100),  # grayscale
        "c9_v1_6_0": jpeg_bytes("CMYK", color=(0, 255, 255, 0)),  # CMYK red
        "c9_v1_7_0": png_bytes("RGBA", color=(0, 0, 255, 255)),  # a PNG with alpha under a .jpg name
        "c9_v1_8_0": buf.getvalue(),  # palette
        "c9_v1_9_0": png_bytes("LA", color=(50, 255)),  # grayscale + alpha
    }
    return make_native(tmp_path_factory.mktemp("native"), special)


def _cfg(tmp_path, synth_root, native, **extra):
    sheet, images, _ = native
    return load(tiny_yaml(tmp_path, synth_root, **native_overrides(sheet, images),
                          **{"DATASET.MAX_IMAGE_PIXELS": MAX_PIXELS, "TRAIN.MAX_EPOCH": 1, **extra}))


def _skipped(bad) -> dict[str, str]:
    from pathlib import Path

    return {Path(p).stem: why for p, why in bad.skipped.items()}


def _check_reasons(skipped: dict[str, str]) -> None:
    assert set(skipped) == set(BAD), skipped
    for image_id, why in BAD.items():
        assert re.match(why, skipped[image_id]), (image_id, skipped[image_id])


def test_cache_skips_and_counts_bad_images_and_converts_colour_modes(tmp_path, synth_root, native, caplog):
    from dataset import build_data, build_loaders, used_splits

    cfg = _cfg(tmp_path, synth_root, native)
    data = build_data(cfg)
    with caplog.at_level(logging.WARNING):
        loaders, bad = build_loaders(cfg, data, used_splits(cfg, data), torch.device("cpu"))
    _check_reasons(_skipped(bad))
    assert "5 image(s) skipped as unreadable (DATASET.ON_BAD_IMAGE=skip)" in caplog.text
    for image_id in BAD:
        assert f"c9_v1_{image_id[6]}_0.jpg: " in caplog.text  # one warning per file, naming it
    rows = {p.stem: i for i, p in enumerate(data.image_paths)}
    used = set(np.concatenate([ld.rows for ld in loaders.values()]).tolist())
    assert not {rows[i] for i in BAD} & used  # bad rows left every split
    assert len(used) == len(data.image_paths) - len(BAD)
    images = next(iter(loaders.values())).images
    for image_id, rgb in CONVERTED.items():
        assert rows[image_id] in used
        pixel = images[rows[image_id], :, 10, 10].tolist()
        assert np.allclose(pixel, rgb, atol=12), (image_id, pixel)


def test_streaming_loader_skips_and_counts_the_same_files(tmp_path, synth_root, native):
    from dataset import build_data, build_loaders, used_splits

    cfg = _cfg(tmp_path, synth_root, native, **{"DATASET.CACHE": False})
    data = build_data(cfg)
    loaders, bad = build_loaders(cfg, data, used_splits(cfg, data), torch.device("cpu"))
    seen = 0
    for loader in loaders.values():
        loader.train = False  # every row, no ragged batch dropped
        for x, y, rows in loader:
            assert x.shape[1:] == (3, 64, 32) and len(x) == len(y) == len(rows)
            seen += len(rows)
    _check_reasons(_skipped(bad))
    assert seen == len(data.image_paths) - len(BAD)


@pytest.mark.parametrize("cache", [True, False])
def test_on_bad_image_error_names_the_file_and_the_switch(tmp_path, synth_root, native, cache):
    from dataset import build_data, build_loaders, used_splits

    cfg = _cfg(tmp_path, synth_root, native, **{"DATASET.ON_BAD_IMAGE": "error", "DATASET.CACHE": cache})
    data = build_data(cfg)
    with pytest.raises(DataError) as e:
        loaders, _ = build_loaders(cfg, data, used_splits(cfg, data), torch.device("cpu"))
        for loader in loaders.values():
            for _ in loader:
                pass
    msg = str(e.value)
    image_id = msg.split(".jpg:")[0].rsplit("/", 1)[-1]
    assert msg.startswith("bad image ") and image_id in BAD, msg
    assert re.search(rf"{image_id}\.jpg: {BAD[image_id]}", msg) and "DATASET.ON_BAD_IMAGE skip" in msg


def test_training_reports_the_skip_count_every_epoch(tmp_path, synth_root, native):
    from tools.engine import run_training as train

    cfg = _cfg(tmp_path, synth_root, native, NAME="badimg")
    train(cfg)
    exp = exp_dir(tmp_path / "badimg.yaml")
    with open(exp / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["bad_images"] for r in rows] == ["5"]
    log = (exp / "log.txt").read_text()
    assert "epoch 0: 5 bad image(s) skipped so far" in log
    assert log.count("skipping image ") == 5
