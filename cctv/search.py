"""Attribute search over processed videos or a folder of person crops (``--mode search``).

    uv run run.py --config-file C --mode search SEARCH.QUERY "female, upper_colour=red, Backpack, not Hat" \
        SEARCH.IN exp_results/videos

A query is conditions joined by commas, matched case-insensitively against the model's attribute
names and groups: ``Backpack`` (an attribute), ``not Hat`` / ``!Hat`` / ``Hat=no``, ``female`` /
``male`` (the display names of a two-way attribute), ``upper_colour=red`` (a group's member, by full or
short name; ``!=`` negates), ``U_red`` (a member on its own), ``eyewear=none`` (an optional group's
"neither"). Candidates are the tracks of ``<stem>_tracks.json`` files (their per-track mean
probabilities) or the images of a crop folder (scored by the model), ranked by the joint probability
of the query (``tools.evaluation.retrieval``). SEARCH.EXAMPLE (a person crop) searches by appearance with the
embeddings of a TASK reid / multitask checkpoint: score = (1 + cosine) / 2 to the example, times the
query's probability when SEARCH.QUERY is also given (tracks carry their mean embedding in the JSON when the
video ran with such a checkpoint). Outputs in SEARCH.OUTPUT: ``search.csv``, ``search.json``
and ``search_top.png`` (a contact sheet of the best crops with rank and score).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import cv2
import numpy as np

from cctv.index import is_index_spec, missing_index, precheck_query
from cctv.search_outputs import contact_sheet, example_embedding, new_result_dir, write_results  # noqa: F401
from cctv.semantics import joint_probability, term_probability
from cctv.vocab import QueryError, Vocabulary, parse_query  # noqa: F401 (the query language, re-exported)

log = logging.getLogger(__name__)

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
PredictFn = Callable[[list[np.ndarray]], np.ndarray]


@dataclass
class Candidate:
    """One searchable thing: a track (mean probabilities) or a crop image (the model's probabilities)."""

    probs: np.ndarray
    attr_names: list[str]
    groups: list
    info: dict = field(default_factory=dict)
    thumb: Path | None = None
    embedding: np.ndarray | None = None  # unit appearance embedding (reid / multitask checkpoints)
    group_argmax: bool = False  # how the model decodes its exclusive groups (cctv.semantics)


def tracks_candidates(tracks_json: Path) -> list[Candidate]:
    """The classified tracks of one ``<stem>_tracks.json`` (tracks with neither probabilities nor an appearance
    embedding are left out; a TASK reid checkpoint gives embeddings and no attributes)."""
    try:
        data = json.loads(Path(tracks_json).read_text(encoding="utf-8"))
        names, groups = list(data["attr_names"]), [list(g) for g in data.get("groups", [])]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise QueryError(f"SEARCH.IN: {tracks_json} is not a tracks JSON of the video pipeline "
                         f"({type(e).__name__}: {e})") from None
    fps = float((data.get("video_info") or {}).get("fps") or 25.0)
    thumbs = data.get("thumbs") or {}
    group_argmax = _decoded_by_argmax(data)
    out = []
    for t in data.get("tracks", []):
        if not t.get("probs") and not t.get("embedding"):
            continue
        thumb = (thumbs.get(str(t["track_id"])) or {}).get("file")
        info = {"kind": "track", "source": str(tracks_json), "video": data.get("video", ""),
                "track_id": t["track_id"], "first_frame": t.get("first_frame"), "last_frame": t.get("last_frame"),
                "time_start_s": round((t["first_frame"] - 1) / fps, 2) if t.get("first_frame") else None,
                "time_end_s": round((t["last_frame"] - 1) / fps, 2) if t.get("last_frame") else None,
                "labels": "; ".join(t.get("label_text", []))}
        emb = np.asarray(t["embedding"], np.float64) if t.get("embedding") else None
        probs = np.array([(t.get("probs") or {}).get(a, np.nan) for a in names], np.float64)
        out.append(Candidate(probs, names, groups, info, Path(tracks_json).parent / thumb if thumb else None, emb,
                             group_argmax))
    return out


def _decoded_by_argmax(data: dict) -> bool:
    """How the video's exclusive groups were decoded (``cctv.semantics``): the JSON's ``group_argmax`` when
    stored, else threshold decoding when some track's exclusive group reads ``none``, else arg-max."""
    if "group_argmax" in data:
        return bool(data["group_argmax"])
    exclusive = [g[0] for g in data.get("groups", []) if len(g) > 1 and g[1] == "exclusive"]
    for t in data.get("tracks", []):
        if any((t.get("labels") or {}).get(g) == "none" for g in exclusive):
            return False
    return True


def crops_candidates(folder: Path, predict: PredictFn, attr_names: Sequence[str], groups: Iterable,
                     batch_size: int = 64, *, embed: PredictFn | None = None,
                     group_argmax: bool = False) -> list[Candidate]:
    """Every readable image under ``folder`` (recursively), scored by ``predict(list of RGB uint8) -> (N, A)``
    and, given ``embed`` (-> (N, D)), with its unit appearance embedding."""
    images = sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
    names, groups = list(attr_names), list(groups)
    out: list[Candidate] = []
    for start in range(0, len(images), batch_size):
        batch, paths = [], []
        for p in images[start:start + batch_size]:
            img = cv2.imread(str(p), cv2.IMREAD_COLOR)
            if img is None:
                log.warning("skipped %s: not a readable image", p)
                continue
            batch.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
            paths.append(p)
        if not batch:
            continue
        probs = np.asarray(predict(batch), np.float64)
        if probs.shape != (len(batch), len(names)):
            raise ValueError(f"predict returned {probs.shape} for {len(batch)} images and {len(names)} attributes")
        embs = _unit(np.asarray(embed(batch), np.float64)) if embed is not None else [None] * len(batch)
        for p, pr, e in zip(paths, probs, embs):
            info = {"kind": "crop", "source": str(folder), "image": p.relative_to(folder).as_posix()}
            out.append(Candidate(pr, names, groups, info, p, e, group_argmax))
    log.info("scored %d crop(s) from %s", len(out), folder)
    return out


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def appearance_similarity(example: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
    """(1 + cosine) / 2 in [0, 1] of each row of ``embeddings`` (N, D) to the ``example`` (D,)."""
    return (1.0 + _unit(np.asarray(embeddings, np.float64)) @ _unit(np.asarray(example, np.float64))) / 2.0


def rank(candidates: list[Candidate], query: str, example: np.ndarray | None = None) -> tuple[list[dict], list[str]]:
    """Candidates as result rows sorted by score (best first), and the terms' texts. The score is the query's
    joint probability, times the appearance similarity to ``example`` (an embedding) when one is given; with
    an example and an empty query, the similarity alone. Candidates of different models (attribute lists)
    are each parsed against their own names."""
    rows, texts = [], []
    if example is not None:
        kept = [c for c in candidates if c.embedding is not None]
        if not kept:
            raise QueryError("SEARCH.EXAMPLE: no candidate has an appearance embedding; process the videos (or "
                             "score the crops) with a TASK multitask or reid checkpoint")
        if len(kept) < len(candidates):
            log.info("search by example: %d candidate(s) without an embedding left out", len(candidates) - len(kept))
        candidates = kept
    by_vocab: dict[tuple, list[Candidate]] = {}
    for c in candidates:
        by_vocab.setdefault((tuple(c.attr_names), json.dumps(c.groups, default=str), c.group_argmax), []).append(c)
    for cands in by_vocab.values():
        terms = parse_query(query, cands[0].attr_names, cands[0].groups) if example is None or query.strip() else []
        texts = texts or [t.text for t in terms]
        probs, ga = np.stack([c.probs for c in cands]), cands[0].group_argmax
        score = joint_probability(probs, terms, ga) if terms else np.ones(len(cands))
        per_term = np.stack([term_probability(probs, t, ga) for t in terms], 1) if terms else np.zeros((len(cands), 0))
        sim = appearance_similarity(example, np.stack([c.embedding for c in cands])) if example is not None else None
        for k, (c, s, pt) in enumerate(zip(cands, score, per_term)):
            extra = {} if sim is None else {"appearance": round(float(sim[k]), 4)}
            rows.append({"score": float(s * (1.0 if sim is None else sim[k])), **c.info, **extra,
                         "thumb": str(c.thumb) if c.thumb else None,
                         "terms": {t.text: round(float(v), 4) for t, v in zip(terms, pt)}})
    rows.sort(key=lambda r: -r["score"])
    for i, r in enumerate(rows, 1):
        r["rank"] = i
    return rows, texts


def find_inputs(spec: str) -> tuple[list[Path], list[Path]]:
    """SEARCH.IN (comma-separated) -> (tracks JSON files, crop folders). A folder holding
    ``*_tracks.json`` (at any depth) is searched as processed videos, any other folder as crops."""
    jsons, crops = [], []
    for part in [s.strip() for s in str(spec).split(",") if s.strip()]:
        p = Path(part)
        if p.is_file() and p.suffix.lower() == ".json":
            jsons.append(p)
        elif p.is_dir():
            found = sorted(p.rglob("*_tracks.json"))
            jsons.extend(found) if found else crops.append(p)
        else:
            raise QueryError(f"SEARCH.IN: '{part}' is neither a <stem>_tracks.json nor a folder; give the "
                             "TEST.OUTPUT_VIDEO_PATH of processed videos or a folder of person crops")
    if not jsons and not crops:
        raise QueryError("SEARCH.IN is empty; give processed videos (a folder of <stem>_tracks.json) "
                         "or a folder of person crops")
    return jsons, crops


def _no_attributes(batch: list[np.ndarray]) -> np.ndarray:
    """A TASK reid checkpoint predicts no attributes: (N, 0)."""
    return np.zeros((len(batch), 0), np.float64)


def _crop_folder_candidates(folders: list[Path], predictor: Any, example: np.ndarray | None) -> list[Candidate]:
    if not folders:
        return []
    decoder = getattr(predictor, "decoder", None)
    predict = predictor.predict_images if list(predictor.attr_names) else _no_attributes
    embed = predictor.embed_images if example is not None else None
    return [c for folder in folders
            for c in crops_candidates(folder, predict, predictor.attr_names, predictor.groups, embed=embed,
                                      group_argmax=bool(getattr(decoder, "group_argmax", False)))]


def run_search(cfg: Any, predictor: Any = None) -> dict:
    """``--mode search``: rank SEARCH.IN by SEARCH.QUERY, keep SEARCH.TOP_K, write into a new folder under
    SEARCH.OUTPUT (``cctv.index.results.new_result_dir``). SEARCH.IN may be a footage index (an ``.sqlite``
    file or a ``postgresql://`` URL): ``cctv.index.search.run_index_search`` answers it.

    ``predictor`` (``attr_names``, ``groups``, ``predict_images``) scores crop folders; built from the
    config's checkpoint only when a crop folder or an example is searched and none is given. Returns the
    output paths, the number of candidates and the top results.
    """
    s = cfg.SEARCH
    if s.TOP_K < 0:
        raise QueryError(f"SEARCH.TOP_K must be >= 0 (0 = all), got {s.TOP_K}")
    if is_index_spec(s.IN):
        if missing_index(s.IN):  # before SQLAlchemy and the rest are imported
            raise QueryError(missing_index(s.IN))
        precheck_query(s.IN, s.QUERY)
        from cctv.index.commands import run_index_search

        return run_index_search(cfg, predictor)
    jsons, folders = find_inputs(s.IN)
    candidates = [c for j in jsons for c in tracks_candidates(j)]
    if (folders or s.EXAMPLE) and predictor is None:
        from tools.inference import Predictor  # heavy; only for crops and examples

        predictor = Predictor.from_cfg(cfg)
    example = example_embedding(s.EXAMPLE, predictor) if s.EXAMPLE else None
    candidates += _crop_folder_candidates(folders, predictor, example)
    if not candidates:
        raise QueryError(f"SEARCH.IN: nothing to search in {s.IN} (no classified tracks, no readable crops)")
    rows, texts = rank(candidates, s.QUERY, example)
    top = rows[: s.TOP_K] if s.TOP_K else rows
    meta = {"query": s.QUERY, "example": s.EXAMPLE, "inputs": [str(p) for p in jsons + folders],
            "n_candidates": len(rows)}
    paths = write_results(top, texts, new_result_dir(s.OUTPUT, s.NAME, s.QUERY or s.EXAMPLE), meta)
    log.info("search %r: %d candidate(s) from %d input(s); best %s; outputs %s", s.QUERY, len(rows),
             len(jsons) + len(folders), ", ".join(f"{r['score']:.3f}" for r in top[:5]), paths["csv"])
    return {"outputs": paths, "n_candidates": len(rows), "results": top}
