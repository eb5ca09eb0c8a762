"""Search the footage index: the query language or free text, camera / time window / minimum duration
filters, search by example over the stored embeddings; the same for ``--mode search`` and the web app.

The tracks' attribute probabilities, times and cameras are held in memory per model (numpy arrays, loaded
once and then only what changed: every ingest bumps the index's revision); a query scores every track that
passes the filters in one vectorised pass (``cctv.semantics``), and fetches the best ones' rows with bound
parameters. Embeddings live in a FAISS index (``cctv.index.vectors``).
"""
from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import select

from cctv.index.freetext import QueryReading as Reading, read_query as _reading
from cctv.index.store import FootageIndex, cameras, models, tracks, videos
from cctv.index.vectors import VectorIndex
from cctv.semantics import member_table
from cctv.vocab import QueryError, Vocabulary
from tools.inference.names import BINARY_DISPLAY, short_names

log = logging.getLogger(__name__)


@dataclass
class Request:
    """One search: ``text`` (query language or free text; "" = every track), filters, an example embedding."""

    text: str = ""
    cameras: list[str] = field(default_factory=list)
    after: float | None = None  # epoch seconds: tracks ending at or after
    before: float | None = None  # tracks starting at or before
    min_seconds: float = 0.0
    min_score: float = 0.0
    limit: int = 50
    example: np.ndarray | None = None  # a unit embedding
    example_model: int | None = None  # the model whose embedding space ``example`` is in (None = any of its size)
    strict: bool = False  # unknown words raise (command line) instead of being returned (web app)
    conditions: str = ""  # extra conditions in the query language (the web app's attribute filters)


class _Block:
    """The searchable tracks of one model, in memory."""

    def __init__(self, row: dict):
        self.model_id = int(row["id"])
        self.vocab = Vocabulary(json.loads(row["attr_names"]), json.loads(row["groups"]))
        self.group_argmax = bool(row["group_argmax"])
        self.dim = int(row["embed_dim"] or 0)
        a = len(self.vocab.attr_names)
        self.ids = np.zeros(0, np.int64)
        self.video = np.zeros(0, np.int64)
        self.camera = np.zeros(0, np.int64)
        self.start = self.end = self.duration = np.zeros(0, np.float64)
        self.columns = np.zeros((a, 0), np.float32)  # (A, N): a query reads only the columns it names
        self.members = np.zeros((a, 0), np.float32)  # (A, N): P(group = member) of grouped attributes (semantics)
        self.nones: dict[tuple, np.ndarray] = {}  # group indices -> P(group = none)
        self.vectors: VectorIndex | None = None
        self.sorter = self.sorted_ids = np.zeros(0, np.int64)

    def append(self, rows: list) -> None:
        if not rows:
            return
        cols = list(zip(*rows))
        self.ids = np.concatenate([self.ids, np.asarray(cols[0], np.int64)])
        self.video = np.concatenate([self.video, np.asarray(cols[1], np.int64)])
        self.camera = np.concatenate([self.camera, np.asarray(cols[2], np.int64)])
        self.start = np.concatenate([self.start, np.asarray(cols[3], np.float64)])
        self.end = np.concatenate([self.end, np.asarray(cols[4], np.float64)])
        self.duration = np.concatenate([self.duration, np.asarray(cols[5], np.float64)])
        a = len(self.vocab.attr_names)
        p = np.frombuffer(b"".join(b or bytes(4 * a) for b in cols[6]), np.float32).reshape(len(rows), a)
        self.columns = np.ascontiguousarray(np.concatenate([self.columns, p.T], axis=1))
        self._add_conditions(p)
        self._add_vectors([(i, e) for i, e in zip(cols[0], cols[7]) if e])
        self.sorter = np.argsort(self.ids, kind="stable")
        self.sorted_ids = self.ids[self.sorter]

    def _add_conditions(self, p: np.ndarray) -> None:
        """Each group's member and ``none`` probabilities of the new rows, computed once at load."""
        members = np.zeros_like(p)
        for g in self.vocab.groups:
            idx = g.indices(self.vocab.attr_names)
            members[:, idx] = member_table(p[:, idx], g.kind == "exclusive", self.group_argmax)
            none = 1.0 - p[:, idx].max(1)
            self.nones[tuple(idx)] = np.concatenate([self.nones.get(tuple(idx), np.zeros(0, np.float32)), none])
        self.members = np.ascontiguousarray(np.concatenate([self.members, members.T], axis=1))

    def condition(self, t, rows: np.ndarray | None = None) -> np.ndarray:
        """(N,) probability of condition ``t`` for every track (or the ``rows`` positions) of this block."""
        if t.kind == "attr":
            col = self.columns[t.index]
        elif t.kind == "member":
            col = self.members[t.index]
        else:
            col = self.nones[tuple(t.group)]
        col = col if rows is None else col[rows]
        return 1.0 - col if t.negate else col

    def joint(self, terms: list, rows: np.ndarray | None = None) -> np.ndarray:
        out = np.ones(len(self.ids) if rows is None else len(rows), np.float32)
        for t in terms:
            out *= self.condition(t, rows)
        return out

    def positions(self, ids: np.ndarray) -> np.ndarray:
        """Row positions of track ``ids``."""
        return self.sorter[np.searchsorted(self.sorted_ids, ids)]

    def _add_vectors(self, pairs: list) -> None:
        if not pairs:
            return
        ids = np.asarray([i for i, _ in pairs], np.int64)
        vecs = np.stack([np.frombuffer(e, np.float16) for _, e in pairs]).astype(np.float32)
        self.dim = vecs.shape[1]
        if self.vectors is None:
            self.vectors = VectorIndex(self.dim).build(ids, vecs)
        else:
            self.vectors.add(ids, vecs)


TRACK_COLS = [tracks.c.id, tracks.c.video_id, tracks.c.camera_id, tracks.c.start_time, tracks.c.end_time,
              tracks.c.duration, tracks.c.probs, tracks.c.embedding]
CHUNK = 500  # video ids per IN (...) list


def _iso(t: float) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(float(t), timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


class Searcher:
    """Answers ``Request``s on one index; safe to share between the web app's threads."""

    def __init__(self, index: FootageIndex):
        self.index, self.lock = index, threading.RLock()
        self.revision, self.blocks, self.loaded = -1, {}, set()
        self.camera_names: dict[int, str] = {}

    def _models(self) -> None:
        with self.index.engine.connect() as c:
            for row in c.execute(select(models)).mappings():
                if int(row["id"]) not in self.blocks:
                    self.blocks[int(row["id"])] = _Block(dict(row))
            self.camera_names = {int(i): n for i, n in c.execute(select(cameras.c.id, cameras.c.name))}

    def refresh(self) -> None:
        """Load what changed since the last call (every ingest bumps the revision)."""
        rev = self.index.revision()
        with self.lock:
            if rev == self.revision:
                return
            with self.index.engine.connect() as c:
                live = set(c.execute(select(videos.c.id).where(videos.c.status == "complete")).scalars())
            if self.loaded - live:  # a video was replaced or removed: start over
                self.blocks, self.loaded = {}, set()
            self._models()
            new = sorted(live - self.loaded)
            for k in range(0, len(new), CHUNK):
                self._load(new[k:k + CHUNK])
            self.loaded |= set(new)
            self.revision = rev

    def _load(self, video_ids: list[int]) -> None:
        q = select(tracks.c.model_id, *TRACK_COLS).where(tracks.c.video_id.in_(video_ids)).order_by(tracks.c.id)
        by_model: dict[int, list] = {}
        with self.index.engine.connect() as c:
            for row in c.execute(q):
                by_model.setdefault(int(row[0]), []).append(tuple(row[1:]))
        for mid, rows in by_model.items():
            self.blocks[mid].append(rows)

    @property
    def size(self) -> int:
        return int(sum(len(b.ids) for b in self.blocks.values()))

    def camera_list(self) -> list[str]:
        self._models()
        return sorted(self.camera_names.values())

    def read(self, text: str, strict: bool = False) -> dict[int, Reading]:
        """How ``text`` reads on each model that can read it; ``QueryError`` when none can read any of it
        (``strict``: also when a word is unknown). Needs only the models table: no tracks, no model."""
        with self.lock:
            if not self.blocks:
                self._models()
        out, errors = {}, []
        for mid, b in sorted(self.blocks.items()):
            if not b.vocab.attr_names:
                continue  # a TASK reid model: appearance only
            try:
                out[mid] = _reading(text, b.vocab, strict)
            except QueryError as e:
                errors.append(e)
        if not out:
            raise errors[0] if errors else QueryError(
                "the footage index holds no model with attributes; search it by example (SEARCH.EXAMPLE)")
        return out

    def _mask(self, b: _Block, req: Request) -> np.ndarray:
        m = np.ones(len(b.ids), bool)
        if req.cameras:
            wanted = [i for i, n in self.camera_names.items() if n in set(req.cameras)]
            m &= np.isin(b.camera, wanted)
        if req.after is not None:
            m &= b.end >= req.after
        if req.before is not None:
            m &= b.start <= req.before
        if req.min_seconds:
            m &= b.duration >= req.min_seconds
        return m

    def _scores(self, b: _Block, reading: Reading | None, req: Request) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(row positions, scores, appearance) of the tracks of ``b`` that pass the filters, best first."""
        mask = self._mask(b, req)
        terms = reading.terms if reading else []
        if req.example is not None:
            k = max(req.limit * 20, 400)
            ids, cos = b.vectors.search(req.example, k, None if mask.all() else b.ids[np.flatnonzero(mask)])
            pos = b.positions(ids)
            appearance = (1.0 + cos.astype(np.float64)) / 2.0
            score = appearance * b.joint(terms, pos)
        else:  # every track scored, the filtered-out ones dropped after: no gather of a million rows
            pos, appearance = np.arange(len(b.ids)), None
            score = b.joint(terms)
            score = np.where(mask, score, -1.0)
        keep = score >= max(req.min_score, 0.0)
        pos, score = pos[keep], score[keep]
        appearance = appearance[keep] if appearance is not None else np.full(len(pos), np.nan)
        if len(score) > req.limit * 4:  # argpartition first: a million scores sorted would cost ~100 ms
            part = np.argpartition(-score, req.limit - 1)[: req.limit]
            top = part[np.argsort(-score[part], kind="stable")]
        else:
            top = np.argsort(-score, kind="stable")[: req.limit]
        return pos[top], score[top], appearance[top]

    def _usable(self, b: _Block, req: Request, readings: dict) -> bool:
        if (req.text.strip() or req.conditions.strip()) and b.model_id not in readings:
            return False
        if req.example is None:
            return True
        if b.vectors is None or b.dim != len(req.example):
            return False
        return req.example_model is None or req.example_model == b.model_id

    def search(self, req: Request) -> dict:
        """``{"query", "unknown", "results": [...], "n_tracks"}``: the best ``req.limit`` tracks (see ``Request``)."""
        self.refresh()
        readings = self._readings(req)
        found = []
        with self.lock:
            for b in self.blocks.values():
                if self._usable(b, req, readings):
                    pos, score, app = self._scores(b, readings.get(b.model_id), req)
                    terms = _term_table(b, pos, readings.get(b.model_id))
                    found += [(float(s), int(b.ids[p]), float(a), b, t) for p, s, a, t in zip(pos, score, app, terms)]
        found.sort(key=lambda f: -f[0])
        found = found[: req.limit]
        rows = self._rows([f[1] for f in found])
        first = next(iter(readings.values()), None)
        return {"query": first.query if first else "", "unknown": first.unknown if first else [],
                "n_tracks": self.size,
                "results": [self._result(f, rows[f[1]], readings) for f in found if f[1] in rows]}  # not replaced since

    def _readings(self, req: Request) -> dict[int, Reading]:
        """The text's reading per model, with the filter conditions (query language) added."""
        readings = self.read(req.text, req.strict) if req.text.strip() else {}
        if not req.conditions.strip():
            return readings
        extra = self.read(req.conditions, strict=True)
        if not req.text.strip():
            return extra
        return {m: Reading(", ".join(x for x in (r.query, extra[m].query) if x), r.terms + extra[m].terms, r.unknown)
                for m, r in readings.items() if m in extra}

    def vocabulary(self) -> dict:
        """What the web app's filters offer: cameras, groups with their values, two-way and other attributes,
        and the time span of the footage."""
        self.refresh()
        with self.lock:
            blocks = [b for b in self.blocks.values() if b.vocab.attr_names]
            span = [float(min((b.start.min() for b in self.blocks.values() if len(b.ids)), default=0)),
                    float(max((b.end.max() for b in self.blocks.values() if len(b.ids)), default=0))]
        v = blocks[0].vocab if blocks else Vocabulary([], [])
        loose = [a for a in v.attr_names if a not in v.member_of]
        return {"cameras": self.camera_list(), "tracks": self.size,
                "groups": [{"name": g.name, "values": short_names(g.attrs) + (["none"] if g.kind == "optional" else [])}
                           for g in v.groups],
                "binary": [{"name": a, "values": list(BINARY_DISPLAY[a])} for a in loose if a in BINARY_DISPLAY],
                "attributes": [a for a in loose if a not in BINARY_DISPLAY],
                "span": [_iso(span[0]), _iso(span[1])] if span[1] else None}

    def track(self, tid: int) -> dict | None:
        """One track as a result (no score), for its page."""
        rows = self._rows([tid])
        return _describe(rows[tid]) if tid in rows else None

    def _rows(self, ids: list[int]) -> dict[int, dict]:
        if not ids:
            return {}
        q = (select(tracks.c.id, tracks.c.track_id, tracks.c.video_id, tracks.c.start_time, tracks.c.end_time,
                    tracks.c.duration, tracks.c.labels, tracks.c.first_frame, tracks.c.last_frame,
                    tracks.c.embedding.isnot(None).label("has_embedding"),
                    videos.c.path, videos.c.media_file, videos.c.start_time.label("video_start"),
                    cameras.c.name.label("camera"))
             .join(videos, videos.c.id == tracks.c.video_id).join(cameras, cameras.c.id == tracks.c.camera_id)
             .where(tracks.c.id.in_(ids)))
        with self.index.engine.connect() as c:
            return {int(r["id"]): dict(r) for r in c.execute(q).mappings()}

    def _result(self, f: tuple, row: dict, readings: dict) -> dict:
        score, tid, app, b, terms = f
        out = {**_describe(row), "score": round(score, 6), "terms": terms}
        if not np.isnan(app):
            out["appearance"] = round(app, 4)
        return out


def _term_table(b: _Block, pos: np.ndarray, reading: Reading | None) -> list[dict]:
    """Per result (row positions ``pos`` of ``b``): each condition's probability (one pass per condition)."""
    terms = reading.terms if reading else []
    if not terms or not len(pos):
        return [{} for _ in pos]
    cols = [np.round(b.condition(t, pos).astype(np.float64), 4) for t in terms]
    return [{t.text: float(c[k]) for t, c in zip(terms, cols)} for k in range(len(pos))]


def _describe(row: dict) -> dict:
    tid, vid = int(row["id"]), int(row["video_id"])
    return {"id": tid, "camera": row["camera"], "video": row["path"], "video_id": vid, "track_id": int(row["track_id"]),
            "start_time": _iso(row["start_time"]), "end_time": _iso(row["end_time"]),
            "offset_s": round(row["start_time"] - row["video_start"], 2), "duration_s": round(row["duration"], 2),
            "first_frame": row["first_frame"], "last_frame": row["last_frame"],
            "labels": json.loads(row["labels"] or "[]"), "thumbnail": f"/media/thumb/{tid}",
            "clip": f"/media/video/{vid}" if row["media_file"] else None, "has_embedding": bool(row["has_embedding"])}
