"""Shared helpers of the robustness suite: tiny configs, subprocess runs, run comparison."""
from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[2]

# Timing columns legitimately differ between two runs of the same config.
TIMING_COLUMNS = ("train_images_per_s", "train_seconds")
SUMMARY_FIELDS = ("best_epoch", "epochs", "val", "test", "majority_val")
# A tiny deterministic CPU run (~5 steps an epoch). EMA, a plateau scheduler that acts every epoch and
# the logit update make the optimizer/scheduler/EMA/criterion state matter on resume.
TINY = {
    "NAME": "rb", "DEVICE": "cpu", "REDIRECTOR": False,
    "DATASET": {"NAME": "SYNTH", "SYNTH_SIZE": 120, "HEIGHT": 64, "WIDTH": 32},
    "MODEL": {"NAME": "timm", "BACKBONE": "test_resnet", "DROP_PATH": 0.0},
    "TRAIN": {"BATCH_SIZE": 16, "MAX_EPOCH": 3, "NUM_WORKERS": 0, "EMA": True, "EMA_DECAY": 0.9,
              "OPTIMIZER": {"TYPE": "adamw", "WEIGHT_DECAY": 0.01},
              "LR_SCHEDULER": {"TYPE": "plateau", "PATIENCE": 0, "FACTOR": 0.5, "LR_FT": 0.003, "LR_NEW": 0.003}},
    "LOSS": {"TYPE": "bceloss", "LOGIT_UPDATE": True},
    "TEST": {"BATCH_SIZE": 64},
    "VIS": {"PLOTS": False, "TENSORBOARD": False},
}
STEPS_PER_EPOCH = int(120 * 0.7) // 16  # SYNTH train split / batch size (ragged batch dropped)


def merged(base: dict, overrides: dict) -> dict:
    """``base`` with dotted-key overrides applied (``{"TRAIN.MAX_EPOCH": 2}``)."""
    out = json.loads(json.dumps(base))
    for key, value in overrides.items():
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def write_yaml(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def tiny_yaml(folder: Path, synth_root: Path, **overrides) -> Path:
    """A tiny config file whose results go under ``folder/exp``; ``overrides`` use dotted keys."""
    data = merged(TINY, {"OUTPUT_DIR": str(folder / "exp"), "DATASET.ROOT": str(synth_root), **overrides})
    return write_yaml(folder / f"{data['NAME']}.yaml", data)


def exp_dir(yaml_path: Path) -> Path:
    data = yaml.safe_load(yaml_path.read_text())
    return Path(data["OUTPUT_DIR"]) / data["DATASET"]["NAME"] / data["NAME"]


def load(yaml_path: Path, *opts: str):
    from configs import load_config

    return load_config(yaml_path, list(opts))


# ----------------------------------------------------------------------------- subprocesses
def env() -> dict:
    e = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1",
             MKL_NUM_THREADS="1")  # as the one_thread fixture: same numerics as the in-process runs
    e.pop("PYTEST_CURRENT_TEST", None)
    return e


@dataclass
class Proc:
    popen: subprocess.Popen
    out: Path

    def text(self) -> str:
        return self.out.read_text(errors="replace")


def start_run(args: list[str], out: Path) -> Proc:
    """``python run.py ARGS`` in the background, stdout+stderr to ``out``."""
    f = open(out, "wb")
    p = subprocess.Popen([sys.executable, str(REPO / "run.py"), *args], cwd=REPO, env=env(), stdout=f,
                         stderr=subprocess.STDOUT)
    f.close()
    return Proc(p, out)


def run_cli(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    """``python run.py ARGS`` to completion."""
    return subprocess.run([sys.executable, str(REPO / "run.py"), *args], cwd=REPO, env=env(), capture_output=True,
                          text=True, timeout=timeout)


def wait_for(cond, proc: Proc | None, timeout: float, what: str) -> None:
    """Poll ``cond()``; fail with the process output if it exits first or time runs out."""
    t_end = time.monotonic() + timeout
    while not cond():
        if proc is not None and proc.popen.poll() is not None:
            raise AssertionError(f"process ended (rc {proc.popen.returncode}) before {what}:\n{proc.text()[-3000:]}")
        if time.monotonic() > t_end:
            raise AssertionError(f"timed out waiting for {what}" + (f":\n{proc.text()[-3000:]}" if proc else ""))
        time.sleep(0.05)


def log_count(exp: Path, marker: str) -> int:
    log = exp / "log.txt"
    return log.read_text(errors="replace").count(marker) if log.is_file() else 0


def epochs_done(exp: Path) -> int:
    """Data rows of metrics.csv (written right after last.pth at the end of every epoch)."""
    f = exp / "metrics.csv"
    return max(len(f.read_text().splitlines()) - 1, 0) if f.is_file() else 0


def kill(proc: Proc, sig: int = signal.SIGKILL) -> None:
    if proc.popen.poll() is None:
        proc.popen.send_signal(sig)


# ----------------------------------------------------------------------------- comparing runs
def metrics_rows(exp: Path, timing: bool = False) -> list[dict[str, str]]:
    """metrics.csv as dicts of the written text, without the timing columns unless ``timing``."""
    with open(exp / "metrics.csv", newline="") as f:
        return [{k: v for k, v in r.items() if timing or k not in TIMING_COLUMNS} for r in csv.DictReader(f)]


def summary(exp: Path) -> dict:
    s = json.loads((exp / "summary.json").read_text())
    return {k: s[k] for k in SUMMARY_FIELDS}


def assert_same_state(a, b, where: str = "") -> None:
    """Nested dicts/lists of tensors and numbers are exactly equal."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b), f"tensor differs at {where}"
    elif isinstance(a, dict):
        assert set(a) == set(b), f"keys differ at {where}: {set(a) ^ set(b)}"
        for k in a:
            assert_same_state(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"length differs at {where}"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_state(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def assert_same_run(exp: Path, ref: Path) -> None:
    """Same final metrics, same per-epoch history, and bit-identical final weights/optimizer/EMA/loss state."""
    from tools.checkpoint import load_checkpoint

    assert summary(exp) == summary(ref)
    assert metrics_rows(exp) == metrics_rows(ref)
    a, b = load_checkpoint(exp / "last.pth"), load_checkpoint(ref / "last.pth")
    for key in ("model", "ema", "optimizer", "scheduler", "criterion", "epoch", "step", "best_metric", "best_epoch"):
        assert_same_state(a[key], b[key], key)
    assert_same_state(load_checkpoint(exp / "best_model.pth")["model"], load_checkpoint(ref / "best_model.pth")["model"],
                      "best_model")


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ----------------------------------------------------------------------------- NATIVE-style files
NATIVE_ATTRS = ["Hat", "Bag", "Female"]


def write_sheet(path: Path, header: list, rows: list[list]) -> Path:
    """A one-sheet xlsx as a person would edit it (openpyxl)."""
    import openpyxl

    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(header)
    for r in rows:
        ws.append(r)
    path.parent.mkdir(parents=True, exist_ok=True)
    wb.save(path)
    return path


def jpeg_bytes(mode: str = "RGB", size: tuple[int, int] = (32, 64), color=(90, 140, 200)) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def png_bytes(mode: str, size: tuple[int, int] = (32, 64), color=0) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    im = Image.new(mode, size, color)
    im.save(buf, "PNG")
    return buf.getvalue()


def make_native(folder: Path, special: dict[str, bytes | None] | None = None, n_tubes: int = 12,
                frames: int = 2) -> tuple[Path, Path, list[str]]:
    """A small NATIVE dataset: ``n_tubes`` x ``frames`` good JPEGs plus ``special`` files (ID -> bytes,
    None = listed in the sheet but absent on disk). Returns (sheet, image folder, all IDs)."""
    import numpy as np

    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    ids = []
    for t in range(n_tubes):
        for f in range(frames):
            image_id = f"c1_v1_{t}_{f}"
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            (images / f"{image_id}.jpg").write_bytes(jpeg_bytes(color=colour))
            ids.append(image_id)
    for image_id, data in (special or {}).items():
        if data is not None:
            (images / f"{image_id}.jpg").write_bytes(data)
        ids.append(image_id)
    rows = [[i, *[int(v) for v in rng.integers(0, 2, len(NATIVE_ATTRS))], "high"] for i in ids]
    sheet = write_sheet(folder / "labels.xlsx", ["ID", *NATIVE_ATTRS, "Quality"], rows)
    return sheet, images, ids


def native_overrides(sheet: Path, images: Path) -> dict:
    return {"DATASET.NAME": "NATIVE", "DATASET.NATIVE_EXCEL": str(sheet), "DATASET.IMAGE_PATH": str(images)}


def the_error_line(stderr: str) -> str:
    """The single ``error: ...`` line a user sees (progress bars may share stderr); no traceback."""
    assert "Traceback" not in stderr, stderr
    lines = [line.strip() for line in stderr.splitlines() if line.strip().startswith("error: ")]
    assert len(lines) == 1, stderr
    return lines[0]
