"""Search outputs: a new result folder per query, ``search.csv`` / ``search.json`` / ``search_top.png``, and the
example image's embedding (shared by the tracks-JSON search and the footage index search)."""
from __future__ import annotations

import csv
import json
import re
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from cctv.vocab import QueryError

SHEET_MAX = 60  # thumbnails on the contact sheet
CELL_W, CELL_H, CAPTION_H = 128, 256, 34


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def contact_sheet(rows: list[dict], path: Path, columns: int = 10) -> Path | None:
    """A PNG grid of the rows' crops (letterboxed) captioned with rank, score and track / image."""
    rows = rows[:SHEET_MAX]
    if not rows:
        return None
    cols = min(columns, len(rows))
    n_rows = (len(rows) + cols - 1) // cols
    sheet = np.full((n_rows * (CELL_H + CAPTION_H), cols * CELL_W, 3), 255, np.uint8)
    for k, r in enumerate(rows):
        y0, x0 = (k // cols) * (CELL_H + CAPTION_H), (k % cols) * CELL_W
        img = cv2.imread(r["thumb"]) if r.get("thumb") else None
        cell = np.full((CELL_H, CELL_W, 3), 210, np.uint8)
        if img is not None:
            s = min(CELL_W / img.shape[1], CELL_H / img.shape[0])
            img = cv2.resize(img, (max(1, int(img.shape[1] * s)), max(1, int(img.shape[0] * s))))
            oy, ox = (CELL_H - img.shape[0]) // 2, (CELL_W - img.shape[1]) // 2
            cell[oy:oy + img.shape[0], ox:ox + img.shape[1]] = img
        sheet[y0:y0 + CELL_H, x0:x0 + CELL_W] = cell
        who = f"#{r['track_id']} {Path(str(r.get('video', ''))).stem}" if r["kind"] == "track" else r["image"]
        for j, text in enumerate((f"{r['rank']}. p={r['score']:.3f}", who[:18])):
            cv2.putText(sheet, text, (x0 + 3, y0 + CELL_H + 13 + 15 * j), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                        (0, 0, 0), 1, cv2.LINE_AA)
        cv2.rectangle(sheet, (x0, y0), (x0 + CELL_W - 1, y0 + CELL_H + CAPTION_H - 1), (180, 180, 180), 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), sheet)
    return path


def new_result_dir(base: str | Path, name: str = "", query: str = "") -> Path:
    """A new folder per query under ``base``: ``name`` (SEARCH.NAME) or ``<UTC time>_<query words>``; an
    existing folder is never reused (``-2``, ``-3`` ... are appended)."""
    stem = name.strip() or time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "_" + (
        re.sub(r"[^A-Za-z0-9]+", "_", Path(str(query)).name if "/" in str(query) else str(query)).strip("_")[:40]
        or "query")
    stem = re.sub(r"[^\w.-]+", "_", stem).strip("._") or "query"
    out, k = Path(base) / stem, 1
    while out.exists():
        k += 1
        out = Path(base) / f"{stem}-{k}"
    return out


def write_results(rows: list[dict], texts: list[str], out_dir: Path, meta: dict) -> dict[str, str]:
    """``search.csv`` (one row per match, one column per condition), ``search.json``, ``search_top.png``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out_dir / "search.csv", "json": out_dir / "search.json"}
    fixed = ["rank", "score", "appearance", "kind", "camera", "start_time", "end_time", "source", "track_id", "image",
             "first_frame", "last_frame", "time_start_s", "time_end_s", "labels", "thumb"]
    with open(paths["csv"], "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(fixed + [f"P({t})" for t in texts])
        for r in rows:
            w.writerow([("" if r.get(k) is None else (f"{r[k]:.6g}" if k == "score" else r[k])) for k in fixed]
                       + [r["terms"].get(t, "") for t in texts])
    paths["json"].write_text(json.dumps({**meta, "terms": texts, "results": rows}, indent=1), encoding="utf-8")
    sheet = contact_sheet(rows, out_dir / "search_top.png")
    if sheet:
        paths["png"] = sheet
    return {k: str(v) for k, v in paths.items()}


def example_embedding(path: str, predictor: Any) -> np.ndarray:
    """SEARCH.EXAMPLE's unit embedding; ``QueryError`` for an unreadable file or a model without embeddings."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR) if Path(path).is_file() else None
    if img is None:
        raise QueryError(f"SEARCH.EXAMPLE: '{path}' is not a readable image; give a person crop (jpg, png ...)")
    if not getattr(predictor, "has_embeddings", False):
        raise QueryError("SEARCH.EXAMPLE needs a checkpoint with an embedding head (TASK reid or multitask); "
                         "this one has none")
    return unit(np.asarray(predictor.embed_images([cv2.cvtColor(img, cv2.COLOR_BGR2RGB)])[0], np.float64))
