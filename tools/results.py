"""What a person reads after a run: log file, metrics.csv, per-attribute report, plots, TensorBoard."""
from __future__ import annotations

import csv
import json
import logging
import math
import sys
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def experiment_dir(cfg, name: str | None = None, dataset: str | None = None) -> Path:
    """<OUTPUT_DIR>/<dataset or DATASET.NAME>/<name or NAME>: where a run writes everything."""
    return Path(cfg.OUTPUT_DIR) / (dataset or cfg.DATASET.NAME) / (name or cfg.NAME)


# Libraries whose INFO lines are chatter to a user of this project; their warnings and errors still show.
QUIET_LIBRARIES = ("timm", "torch", "onnx", "onnxscript", "onnx_ir", "onnxruntime", "numexpr", "PIL", "matplotlib",
                   "httpx", "httpcore", "urllib3", "huggingface_hub", "filelock", "fsspec", "h5py", "ultralytics")


def setup_logging(exp_dir: Path | None, console: bool = True, main: bool = True) -> None:
    """Log to ``exp_dir/log.txt`` and the console (only rank 0 writes): this project's INFO and up,
    other libraries' (``QUIET_LIBRARIES``) WARNING and up."""
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING)
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_par", False):
            root.removeHandler(h)
    root.setLevel(logging.INFO)
    fmt = logging.Formatter("%(asctime)s %(levelname).1s %(name)s: %(message)s", "%H:%M:%S")
    handlers = []
    if main and exp_dir is not None:
        exp_dir.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(exp_dir / "log.txt", encoding="utf-8"))
    if console and main:
        handlers.append(logging.StreamHandler(sys.stdout))
    for h in handlers:
        h.setFormatter(fmt)
        h._par = True
        root.addHandler(h)


def write_metrics_csv(path: Path, rows: list[dict]) -> None:
    """Rewrite the whole file from the history (so a resumed run never has stale rows)."""
    if not rows:
        return
    keys = list(dict.fromkeys(k for r in rows for k in r))
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    tmp.replace(path)


def write_attribute_report(path_csv: Path, attr_names: list[str], reports: dict[str, dict], plot: bool) -> None:
    """Per-attribute metrics of the best epoch: CSV, and a bar chart of mA per attribute."""
    cols = ["n_pos", "n_neg", "pos_recall", "neg_recall", "ma", "acc", "prec", "f1"]
    with open(path_csv, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["attribute"] + [f"{s}_{c}" for s in reports for c in cols])
        for j, name in enumerate(attr_names):
            row = [name]
            for rep in reports.values():
                for c in cols:
                    v = rep["per_attr"][c][j]
                    row.append(int(v) if c.startswith("n_") else ("" if math.isnan(v) else f"{v:.4f}"))
            w.writerow(row)
    if plot:
        _bar_chart(path_csv.with_suffix(".png"), attr_names, reports)


def _bar_chart(path: Path, attr_names: list[str], reports: dict[str, dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(attr_names)
    fig, ax = plt.subplots(figsize=(8, max(4, 0.28 * n + 1)))
    width = 0.8 / max(len(reports), 1)
    y = np.arange(n)
    for k, (split, rep) in enumerate(reports.items()):
        vals = np.nan_to_num(rep["per_attr"]["ma"], nan=0.0)
        ax.barh(y + k * width, vals, height=width, label=f"{split} (mA {rep['ma']:.3f})")
        for j in np.flatnonzero(np.isnan(rep["per_attr"]["ma"])):
            ax.text(0.01, j + k * width, "no positives", va="center", fontsize=6)
    ax.set_yticks(y + width * (len(reports) - 1) / 2, attr_names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.axvline(0.5, color="grey", lw=0.5, ls="--")
    ax.set_xlabel("label-based mA ((pos recall + neg recall) / 2)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_curves(path: Path, rows: list[dict]) -> None:
    """Loss and mA (and ReID mAP) per epoch, train/val/test, on one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not rows:
        return
    ep = [r["epoch"] for r in rows]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (("train_loss", "train"), ("val_loss", "val"), ("test_loss", "test")):
        if key in rows[0]:
            a1.plot(ep, [r.get(key, np.nan) for r in rows], marker="o", ms=3, label=label)
    a1.set_title("loss")
    a1.set_xlabel("epoch")
    a1.legend()
    for key, label in (("val_ma", "val mA"), ("test_ma", "test mA"), ("val_instance_f1", "val F1"),
                       ("val_mAP", "val ReID mAP"), ("test_mAP", "test ReID mAP")):
        if key in rows[0]:
            a2.plot(ep, [r.get(key, np.nan) for r in rows], marker="o", ms=3, label=label)
    a2.set_title("metrics")
    a2.set_xlabel("epoch")
    a2.set_ylim(0, 1)
    a2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def scalar_metrics(m: dict) -> dict:
    return {k: v for k, v in m.items() if k != "per_attr"}


def write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=float))
    tmp.replace(path)
