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

import csv
import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import cv2
import numpy as np

from configs.errors import UserError
from tools.evaluation.retrieval import Term, joint_probability, term_probability
from tools.inference.labels import BINARY_DISPLAY, NONE, _short_names, as_groups

log = logging.getLogger(__name__)

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
NEGATIONS = ("not ", "no ", "!", "-", "~")
YES, NO = ("yes", "true", "1", "on", "y"), ("no", "false", "0", "off", "n")
SHEET_MAX = 60  # thumbnails on the contact sheet
CELL_W, CELL_H, CAPTION_H = 128, 256, 34
PredictFn = Callable[[list[np.ndarray]], np.ndarray]


class QueryError(UserError, ValueError):
    """A query, input or search setting that cannot be used; one line naming what is valid."""


def _norm(s: str) -> str:
    return " ".join(s.strip().lower().replace("-", "_").split()).replace(" ", "_").strip("/_")


@dataclass
class Vocabulary:
    """What a query may name, for one model's attributes and groups."""

    attr_names: list[str]
    groups: list

    def __post_init__(self) -> None:
        self.groups = as_groups(self.groups)
        self.index = {_norm(a): i for i, a in enumerate(self.attr_names)}
        self.by_group = {_norm(g.name): g for g in self.groups}
        self.member_of = {a: g for g in self.groups for a in g.attrs}
        self.display = {}  # "female" -> (attribute, on?)
        for a, (on, off) in BINARY_DISPLAY.items():
            if a in self.attr_names:
                self.display[_norm(on)], self.display[_norm(off)] = (a, True), (a, False)

    def describe(self) -> str:
        """The valid names, on one line."""
        groups = "; ".join(f"{g.name}=" + "|".join(_short_names(g.attrs)) + ("|none" if g.kind == "optional" else "")
                           for g in self.groups)
        loose = [a for a in self.attr_names if a not in self.member_of]
        words = [f"{on}/{off}" for a, (on, off) in BINARY_DISPLAY.items() if a in loose]
        return f"groups: {groups or '-'}; attributes: {', '.join(words + [a for a in loose if a not in BINARY_DISPLAY])}"

    def member(self, group: Any, value: str) -> Term:
        v = _norm(value)
        idx = group.indices(self.attr_names)
        if v == NONE and group.kind == "optional":
            return Term("none", group=tuple(idx), text=f"{group.name}=none")
        for a, short, i in zip(group.attrs, _short_names(group.attrs), idx):
            if v in (_norm(a), _norm(short)):
                return Term("member", i, tuple(idx), group.kind == "exclusive", text=f"{group.name}={a}")
        raise QueryError(f"unknown value {value.strip()!r} for group {group.name}; valid: "
                         + ", ".join(_short_names(group.attrs)) + (", none" if group.kind == "optional" else ""))

    def term(self, raw: str) -> Term:
        """One condition of a query (see the module doc)."""
        text, negate = raw.strip(), False
        for word in NEGATIONS:
            if text.lower().startswith(word):
                text, negate = text[len(word):].strip(), True
                break
        if "!=" in text:
            key, value = text.split("!=", 1)
            negate = not negate
        elif "=" in text:
            key, value = text.split("=", 1)
        else:
            key, value = text, None
        t = self._resolve(key, value)
        return replace(t, negate=t.negate != negate, text=raw.strip())

    def _resolve(self, key: str, value: str | None) -> Term:
        k = _norm(key)
        if k in self.by_group:
            if value is None:
                raise QueryError(f"'{key.strip()}' is a group: write {self.by_group[k].name}=<value>; "
                                 + self.describe())
            return self.member(self.by_group[k], value)
        if k in self.index:
            name = self.attr_names[self.index[k]]
            if value is None and name in self.member_of:
                return self.member(self.member_of[name], name)
            if value is None:
                return Term("attr", self.index[k])
            return Term("attr", self.index[k], negate=self._yes_no(name, value))
        if value is None and k in self.display:
            name, on = self.display[k]
            return Term("attr", self.attr_names.index(name), negate=not on)
        if value is None:
            hits = [g for g in self.groups if k in (_norm(s) for s in _short_names(g.attrs))]
            if len(hits) == 1:
                return self.member(hits[0], key)
            if len(hits) > 1:
                raise QueryError(f"'{key.strip()}' is a value of several groups ({', '.join(g.name for g in hits)}): "
                                 f"write e.g. {hits[0].name}={key.strip()}")
        raise QueryError(f"unknown attribute {key.strip()!r} in SEARCH.QUERY; valid {self.describe()}")

    def _yes_no(self, name: str, value: str) -> bool:
        """True when ``name=value`` asks for the attribute to be off."""
        v = _norm(value)
        pair = [_norm(w) for w in BINARY_DISPLAY.get(name, ())]
        if v in YES or (pair and v == pair[0]):
            return False
        if v in NO or (pair and v == pair[1]):
            return True
        raise QueryError(f"unknown value {value.strip()!r} for attribute {name}; valid: yes, no"
                         + (f", {', '.join(BINARY_DISPLAY[name])}" if name in BINARY_DISPLAY else ""))


def parse_query(query: str, attr_names: Sequence[str], groups: Iterable) -> list[Term]:
    """Comma-separated conditions -> terms; ``QueryError`` (one line, with the valid names) for unknown ones."""
    vocab = Vocabulary(list(attr_names), list(groups))
    parts = [p for p in str(query).split(",") if p.strip()]
    if not parts:
        raise QueryError("SEARCH.QUERY is empty; write conditions joined by commas, e.g. "
                         f"\"female, Backpack, not Hat\"; valid {vocab.describe()}")
    return [vocab.term(p) for p in parts]


@dataclass
class Candidate:
    """One searchable thing: a track (mean probabilities) or a crop image (the model's probabilities)."""

    probs: np.ndarray
    attr_names: list[str]
    groups: list
    info: dict = field(default_factory=dict)
    thumb: Path | None = None
    embedding: np.ndarray | None = None  # unit appearance embedding (reid / multitask checkpoints)


def tracks_candidates(tracks_json: Path) -> list[Candidate]:
    """The classified tracks of one ``<stem>_tracks.json`` (tracks never classified are left out)."""
    try:
        data = json.loads(Path(tracks_json).read_text(encoding="utf-8"))
        names, groups = list(data["attr_names"]), [list(g) for g in data.get("groups", [])]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise QueryError(f"SEARCH.IN: {tracks_json} is not a tracks JSON of the video pipeline "
                         f"({type(e).__name__}: {e})") from None
    fps = float((data.get("video_info") or {}).get("fps") or 25.0)
    thumbs = data.get("thumbs") or {}
    out = []
    for t in data.get("tracks", []):
        if not t.get("probs"):
            continue
        thumb = (thumbs.get(str(t["track_id"])) or {}).get("file")
        info = {"kind": "track", "source": str(tracks_json), "video": data.get("video", ""),
                "track_id": t["track_id"], "first_frame": t.get("first_frame"), "last_frame": t.get("last_frame"),
                "time_start_s": round((t["first_frame"] - 1) / fps, 2) if t.get("first_frame") else None,
                "time_end_s": round((t["last_frame"] - 1) / fps, 2) if t.get("last_frame") else None,
                "labels": "; ".join(t.get("label_text", []))}
        emb = np.asarray(t["embedding"], np.float64) if t.get("embedding") else None
        out.append(Candidate(np.array([t["probs"][a] for a in names], np.float64), names, groups, info,
                             Path(tracks_json).parent / thumb if thumb else None, emb))
    return out


def crops_candidates(folder: Path, predict: PredictFn, attr_names: Sequence[str], groups: Iterable,
                     batch_size: int = 64, *, embed: PredictFn | None = None) -> list[Candidate]:
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
            out.append(Candidate(pr, names, groups, info, p, e))
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
        by_vocab.setdefault((tuple(c.attr_names), json.dumps(c.groups, default=str)), []).append(c)
    for cands in by_vocab.values():
        terms = parse_query(query, cands[0].attr_names, cands[0].groups) if example is None or query.strip() else []
        texts = texts or [t.text for t in terms]
        probs = np.stack([c.probs for c in cands])
        score = joint_probability(probs, terms) if terms else np.ones(len(cands))
        per_term = np.stack([term_probability(probs, t) for t in terms], 1) if terms else np.zeros((len(cands), 0))
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


def write_results(rows: list[dict], texts: list[str], out_dir: Path, meta: dict) -> dict[str, str]:
    """``search.csv`` (one row per match, one column per condition), ``search.json``, ``search_top.png``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out_dir / "search.csv", "json": out_dir / "search.json"}
    fixed = ["rank", "score", "appearance", "kind", "source", "track_id", "image", "first_frame", "last_frame",
             "time_start_s", "time_end_s", "labels", "thumb"]
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


def _example_embedding(path: str, predictor: Any) -> np.ndarray:
    """SEARCH.EXAMPLE's unit embedding; ``QueryError`` for an unreadable file or a model without embeddings."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR) if Path(path).is_file() else None
    if img is None:
        raise QueryError(f"SEARCH.EXAMPLE: '{path}' is not a readable image; give a person crop (jpg, png ...)")
    if not getattr(predictor, "has_embeddings", False):
        raise QueryError("SEARCH.EXAMPLE needs a checkpoint with an embedding head (TASK reid or multitask); "
                         "this one has none")
    return _unit(np.asarray(predictor.embed_images([cv2.cvtColor(img, cv2.COLOR_BGR2RGB)])[0], np.float64))


def run_search(cfg: Any, predictor: Any = None) -> dict:
    """``--mode search``: rank SEARCH.IN by SEARCH.QUERY, keep SEARCH.TOP_K, write into SEARCH.OUTPUT.

    ``predictor`` (``attr_names``, ``groups``, ``predict_images``) scores crop folders; built from the
    config's checkpoint only when a crop folder is searched and none is given. Returns the output paths,
    the number of candidates and the top results.
    """
    s = cfg.SEARCH
    if s.TOP_K < 0:
        raise QueryError(f"SEARCH.TOP_K must be >= 0 (0 = all), got {s.TOP_K}")
    jsons, folders = find_inputs(s.IN)
    candidates = [c for j in jsons for c in tracks_candidates(j)]
    if (folders or s.EXAMPLE) and predictor is None:
        from tools.inference import Predictor  # heavy; only for crops and examples

        predictor = Predictor.from_cfg(cfg)
    example = _example_embedding(s.EXAMPLE, predictor) if s.EXAMPLE else None
    for folder in folders:
        embed = predictor.embed_images if example is not None else None
        candidates += crops_candidates(folder, predictor.predict_images, predictor.attr_names, predictor.groups,
                                       embed=embed)
    if not candidates:
        raise QueryError(f"SEARCH.IN: nothing to search in {s.IN} (no classified tracks, no readable crops)")
    rows, texts = rank(candidates, s.QUERY, example)
    top = rows[: s.TOP_K] if s.TOP_K else rows
    meta = {"query": s.QUERY, "example": s.EXAMPLE, "inputs": [str(p) for p in jsons + folders],
            "n_candidates": len(rows)}
    paths = write_results(top, texts, Path(s.OUTPUT), meta)
    log.info("search %r: %d candidate(s) from %d input(s); best %s; outputs %s", s.QUERY, len(rows),
             len(jsons) + len(folders), ", ".join(f"{r['score']:.3f}" for r in top[:5]), paths["csv"])
    return {"outputs": paths, "n_candidates": len(rows), "results": top}
