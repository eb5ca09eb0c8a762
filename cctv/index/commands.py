"""``--mode search`` on a footage index (SEARCH.IN an .sqlite file or a postgresql:// URL).

The index is opened and the query read against its stored vocabulary before anything heavy is imported:
a missing index or an unknown word is a one-line error within a second or two. Only a search by an
example image needs the model (to embed the image); ``SEARCH.EXAMPLE track:<id>`` uses a stored track's
embedding instead.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select

from cctv.index.ingest import file_hash, parse_time
from cctv.index.search import Request, Searcher
from cctv.index.store import FootageIndex, models, open_index, safe_spec, tracks
from cctv.vocab import QueryError

log = logging.getLogger(__name__)


def request_from_cfg(cfg: Any) -> Request:
    """SEARCH.QUERY / CAMERA / AFTER / BEFORE / MIN_SECONDS / MIN_SCORE / TOP_K as a ``Request``."""
    s = cfg.SEARCH
    return Request(text=str(s.QUERY), cameras=[c.strip() for c in str(s.CAMERA).split(",") if c.strip()],
                   after=parse_time(s.AFTER, "SEARCH.AFTER") if s.AFTER else None,
                   before=parse_time(s.BEFORE, "SEARCH.BEFORE") if s.BEFORE else None,
                   min_seconds=float(s.MIN_SECONDS), min_score=float(s.MIN_SCORE),
                   limit=int(s.TOP_K) or 1_000_000, strict=True)


def track_number(example: str) -> int:
    """The id of ``SEARCH.EXAMPLE track:<id>``."""
    number = example.split(":", 1)[1].strip()
    if not (number.isascii() and number.isdigit()):
        raise QueryError(f"SEARCH.EXAMPLE: '{example}' is not track:<id> with a number (a track's id in the index)")
    return int(number)


def stored_example(index: FootageIndex, track: int) -> tuple[np.ndarray, int]:
    """The embedding of the index's track ``track`` and its model id; ``QueryError`` without one."""
    with index.engine.connect() as c:
        row = c.execute(select(tracks.c.embedding, tracks.c.model_id).where(tracks.c.id == int(track))).first()
    if row is None or not row[0]:
        raise QueryError(f"SEARCH.EXAMPLE: track {track} is not in the index or has no appearance embedding "
                         "(its video was processed with a checkpoint without an embedding head)")
    return np.frombuffer(row[0], np.float16).astype(np.float32), int(row[1])


def image_example(index: FootageIndex, cfg: Any, path: str, predictor: Any = None) -> tuple[np.ndarray, int]:
    """The example image embedded by the configured checkpoint, which must be one the index holds."""
    if not Path(path).is_file():
        raise QueryError(f"SEARCH.EXAMPLE: '{path}' is not a readable image; give a person crop or track:<id>")
    if predictor is None:
        from tools.inference import Predictor  # heavy: only an example image needs the model

        predictor = Predictor.from_cfg(cfg)
    ckpt = getattr(getattr(predictor, "loaded", None), "path", None)
    with index.engine.connect() as c:
        rows = c.execute(select(models.c.id, models.c.checkpoint_hash)).all()
    wanted = file_hash(Path(ckpt)) if ckpt else None
    match = [int(i) for i, h in rows if wanted is None or h == wanted]
    if not match:
        raise QueryError(f"SEARCH.EXAMPLE: the index holds no tracks embedded by {ckpt}; give the checkpoint its "
                         "videos were processed with (TEST.PRETRAINED_WEIGHTS), or SEARCH.EXAMPLE track:<id>")
    from cctv.search_outputs import example_embedding

    return example_embedding(path, predictor).astype(np.float32), match[0]


def _rows_for_files(results: list[dict], out: Path, index: FootageIndex) -> list[dict]:
    """Result rows in ``cctv.search.write_results``' shape; thumbnails copied into the result folder."""
    t = tracks
    (out / "thumbs").mkdir(parents=True, exist_ok=True)
    ids = [r["id"] for r in results]
    with index.engine.connect() as c:
        thumbs = dict(c.execute(select(t.c.id, t.c.thumbnail).where(t.c.id.in_(ids))).all()) if ids else {}
    rows = []
    for rank, r in enumerate(results, 1):
        thumb = out / "thumbs" / f"{r['id']}.jpg"
        if thumbs.get(r["id"]):
            thumb.write_bytes(thumbs[r["id"]])
        rows.append({**r, "rank": rank, "kind": "track", "source": r["video"], "thumb": str(thumb) if thumb.is_file()
                     else None, "time_start_s": r["offset_s"], "time_end_s": round(r["offset_s"] + r["duration_s"], 2),
                     "labels": "; ".join(f"{x['text']} {x['p']:.2f}" for x in r["labels"])})
    return rows


def run_index_search(cfg: Any, predictor: Any = None) -> dict:
    """``--mode search`` with SEARCH.IN a footage index: the query as read is logged and stored with the
    results in a new folder under SEARCH.OUTPUT."""
    from cctv.search_outputs import new_result_dir, write_results

    s = cfg.SEARCH
    index = open_index(s.IN, cfg.TEST.INDEX_MEDIA)
    searcher, req = Searcher(index), request_from_cfg(cfg)
    if req.text.strip():
        searcher.read(req.text, strict=True)  # unknown words fail here, before any loading
    if s.EXAMPLE:
        ex = s.EXAMPLE.strip()
        req.example, req.example_model = (stored_example(index, track_number(ex)) if ex.startswith("track:")
                                          else image_example(index, cfg, ex, predictor))
    elif not req.text.strip():
        raise QueryError("SEARCH.QUERY and SEARCH.EXAMPLE are both empty; give conditions (\"female, Backpack\"), "
                         "plain words (\"woman with a backpack\") or an example")
    answer = searcher.search(req)
    out = new_result_dir(s.OUTPUT, s.NAME, s.QUERY or s.EXAMPLE)
    rows = _rows_for_files(answer["results"], out, index)
    terms = list(rows[0]["terms"]) if rows else []
    meta = {"query": s.QUERY, "read_as": answer["query"], "example": s.EXAMPLE, "index": safe_spec(s.IN),
            "n_candidates": answer["n_tracks"], "filters": {"camera": s.CAMERA, "after": s.AFTER, "before": s.BEFORE,
                                                            "min_seconds": s.MIN_SECONDS}}
    paths = write_results(rows, terms, out, meta)
    log.info("search %r read as %r: %d of %d track(s) in %s; best %s; outputs %s", s.QUERY, answer["query"],
             len(rows), answer["n_tracks"], safe_spec(s.IN), ", ".join(f"{r['score']:.3f}" for r in rows[:5]),
             paths["csv"])
    index.close()
    return {"outputs": paths, "n_candidates": answer["n_tracks"], "results": rows, "query": answer["query"]}
