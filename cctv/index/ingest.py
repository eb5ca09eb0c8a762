"""Video mode -> the footage index: one transaction per video.

``VideoIngestor.begin(video)`` is called before a video is processed: a video already in the index with
the same content hash and the same checkpoint is skipped (never ingested twice); otherwise a row marked
``incomplete`` is committed (replacing an earlier incomplete one). ``finish(video, tracks_json)`` then
replaces that row, in one transaction, by the complete video with all its tracks. A run killed in between
leaves the video ``incomplete`` (never searched); the next run processes it again and replaces it.
Several processes (machines, with PostgreSQL) may ingest into one index: the unique (content hash,
checkpoint) pair and the transactions keep one copy per video.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from cctv.index.media import browser_copy
from cctv.index.store import FootageIndex, cameras, host_name, models, safe_spec, tracks, videos
from cctv.semantics import labels_with_confidence
from cctv.vocab import QueryError

log = logging.getLogger(__name__)


@dataclass
class ModelInfo:
    """What the index keeps of the checkpoint that classified a video."""

    checkpoint_hash: str
    name: str
    attr_names: list[str]
    groups: list
    thresholds: list[float]
    group_argmax: bool
    embed_dim: int = 0


def file_hash(path: Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's content."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def model_info(predictor: Any, checkpoint: str | Path | None = None, threshold: float = 0.5) -> ModelInfo:
    """The predictor's vocabulary and decoding; its checkpoint's content hash (else a hash of the vocabulary)."""
    names = list(predictor.attr_names)
    groups = [[g.name, g.kind, *g.attrs] if hasattr(g, "attrs") else list(g) for g in predictor.groups]
    decoder = getattr(predictor, "decoder", None)
    thresholds = [float(t) for t in getattr(decoder, "thresholds", [threshold] * len(names))]
    path = checkpoint or getattr(getattr(predictor, "loaded", None), "path", None)
    if path and Path(path).is_file():
        digest, name = file_hash(Path(path)), str(path)
    else:
        digest = hashlib.sha256(json.dumps([names, groups]).encode()).hexdigest()  # no file: its vocabulary
        name = type(predictor).__name__
    contract = getattr(predictor, "contract", None)
    return ModelInfo(digest, name, names, groups, thresholds, bool(getattr(decoder, "group_argmax", False)),
                     int(getattr(contract, "embed_dim", 0) or 0))  # the search reads the size off the vectors


def _from_pattern(name: str, pattern: str) -> float | None:
    m = re.search(pattern, name) if pattern else None
    if not m:
        return None
    g = {k: int(v) for k, v in m.groupdict().items() if v is not None}
    try:
        return datetime(g["Y"], g["m"], g["d"], g.get("H", 0), g.get("M", 0), g.get("S", 0),
                        tzinfo=timezone.utc).timestamp()
    except (KeyError, ValueError):
        return None


def _from_container(video: Path) -> float | None:
    try:
        import av

        with av.open(str(video)) as c:
            stamp = c.metadata.get("creation_time") or c.streams.video[0].metadata.get("creation_time")
    except Exception:  # noqa: BLE001 - no metadata is not an error
        return None
    return parse_time(stamp, "creation_time") if stamp else None


def parse_time(value: str, key: str = "TEST.START_TIME") -> float:
    """ISO 8601 (UTC unless it carries an offset) -> epoch seconds; ``QueryError`` naming ``key``."""
    try:
        t = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
    except ValueError:
        raise QueryError(f"{key}: '{value}' is not an ISO 8601 time; write e.g. 2026-03-01T08:00:00") from None
    return (t if t.tzinfo else t.replace(tzinfo=timezone.utc)).timestamp()


def wall_clock_start(video: Path, key: str = "", pattern: str = "") -> tuple[float, str]:
    """(epoch seconds, where it came from): TEST.START_TIME ``key``, else the file name ``pattern``, else the
    container's creation_time, else the file's modification time."""
    if key:
        return parse_time(key), "key"
    found = _from_pattern(Path(video).name, pattern)
    if found is not None:
        return found, "filename"
    found = _from_container(Path(video)) if Path(video).is_file() else None
    if found is not None:
        return found, "metadata"
    if Path(video).is_file():
        return Path(video).stat().st_mtime, "mtime"
    return time.time(), "clock"


def _get_or_create(conn, table, where: dict, values: dict) -> int:
    cond = [table.c[k] == v for k, v in where.items()]
    found = conn.execute(select(table.c.id).where(*cond)).scalar()
    if found is not None:
        return int(found)
    try:
        with conn.begin_nested():
            return int(conn.execute(table.insert().values(**where, **values)).inserted_primary_key[0])
    except IntegrityError:  # another process made it meanwhile
        return int(conn.execute(select(table.c.id).where(*cond)).scalar_one())


def model_id(conn, m: ModelInfo) -> int:
    return _get_or_create(conn, models, {"checkpoint_hash": m.checkpoint_hash}, {
        "name": m.name, "attr_names": json.dumps(m.attr_names), "groups": json.dumps(m.groups),
        "thresholds": json.dumps(m.thresholds), "group_argmax": m.group_argmax, "embed_dim": m.embed_dim})


def camera_id(conn, name: str) -> int:
    return _get_or_create(conn, cameras, {"name": name}, {})


def _remove(conn, content_hash: str, model: int) -> None:
    old = conn.execute(select(videos.c.id).where(videos.c.content_hash == content_hash,
                                                 videos.c.model_id == model)).scalars().all()
    if old:
        conn.execute(delete(tracks).where(tracks.c.video_id.in_(old)))
        conn.execute(delete(videos).where(videos.c.id.in_(old)))


def track_rows(data: dict, folder: Path, m: ModelInfo, start: float) -> list[dict]:
    """The tracks of a tracks JSON as ``tracks`` rows (without video / camera / model ids)."""
    fps = float((data.get("video_info") or {}).get("fps") or 25.0)
    thumbs = data.get("thumbs") or {}
    rows = []
    for t in data.get("tracks", []):
        if not t.get("probs") and not t.get("embedding"):
            continue  # never classified: nothing to search by
        p = np.array([(t.get("probs") or {}).get(a, 0.0) for a in m.attr_names], np.float32)
        emb = t.get("embedding")
        thumb = (thumbs.get(str(t["track_id"])) or {})
        rows.append({
            "track_id": int(t["track_id"]), "first_frame": t["first_frame"], "last_frame": t["last_frame"],
            "start_time": start + (t["first_frame"] - 1) / fps, "end_time": start + (t["last_frame"] - 1) / fps,
            "duration": (t["last_frame"] - t["first_frame"] + 1) / fps, "frames_seen": t.get("frames_seen"),
            "boxes": json.dumps({"frames": t.get("frames", []), "boxes": t.get("boxes", [])}, separators=(",", ":")),
            "labels": json.dumps(labels_with_confidence(p, m.attr_names, m.groups, m.thresholds, m.group_argmax)),
            "probs": p.tobytes(), "embedding": _unit16(emb) if emb else None,
            "thumbnail": _read(folder / thumb["file"]) if thumb.get("file") else None,
            "thumb_frame": thumb.get("frame")})
    return rows


def _unit16(v: Sequence[float]) -> bytes:
    e = np.asarray(v, np.float32)
    return (e / max(float(np.linalg.norm(e)), 1e-12)).astype(np.float16).tobytes()


def _read(path: Path) -> bytes | None:
    return path.read_bytes() if path.is_file() else None


@dataclass
class _Pending:
    content_hash: str
    camera: str
    start: float
    start_source: str


class VideoIngestor:
    """Ingests the videos of one ``--mode video`` run (one camera, one checkpoint) into ``index``."""

    def __init__(self, index: FootageIndex, model: ModelInfo, camera: str = "", start_key: str = "",
                 start_pattern: str = ""):
        self.index, self.model, self.camera = index, model, camera
        self.start_key, self.start_pattern = start_key, start_pattern
        with index.writer.begin() as c:
            self.model_id = model_id(c, model)
        self.pending: dict[str, _Pending] = {}

    def _camera_of(self, video: Path) -> str:
        return self.camera or Path(video).resolve().parent.name or "camera"

    def _content_hash(self, video: Path) -> str:
        if Path(video).is_file():
            return file_hash(Path(video))
        return hashlib.sha256(f"stream:{video}:{time.time()}".encode()).hexdigest()  # a stream: every run is new

    def begin(self, video: Path) -> bool:
        """False when this video (content) with this checkpoint is already complete in the index; else
        commit an ``incomplete`` row for it (replacing an earlier incomplete one) and return True."""
        digest = self._content_hash(video)
        start, source = wall_clock_start(video, self.start_key, self.start_pattern)
        try:
            with self.index.writer.begin() as c:
                status = c.execute(select(videos.c.status).where(videos.c.content_hash == digest,
                                                                 videos.c.model_id == self.model_id)).scalar()
                if status == "complete":
                    return False
                _remove(c, digest, self.model_id)
                c.execute(videos.insert().values(**self._video_values(video, digest, c, start, source),
                                                 status="incomplete"))
        except IntegrityError:  # another process began this video at the same moment: it ingests it
            log.info("%s: being ingested by another process; skipped", Path(str(video)).name)
            return False
        self.pending[str(video)] = _Pending(digest, self._camera_of(video), start, source)
        log.info("%s: wall-clock start %s (from %s), camera %s", Path(str(video)).name,
                 datetime.fromtimestamp(start, timezone.utc).isoformat(timespec="seconds"), source,
                 self._camera_of(video))
        return True

    def _video_values(self, video: Path, digest: str, conn, start: float, source: str) -> dict:
        return {"path": str(video), "content_hash": digest, "camera_id": camera_id(conn, self._camera_of(video)),
                "model_id": self.model_id, "start_time": start, "start_source": source, "ingested_at": time.time(),
                "host": host_name()}

    def finish(self, video: Path, tracks_json: Path) -> int | None:
        """Replace the video's row by the complete one with all its tracks (one transaction); a run that did
        not complete stays ``incomplete``. Returns the video's id in the index (None when left incomplete)."""
        p = self.pending.pop(str(video), None)
        data = json.loads(Path(tracks_json).read_text(encoding="utf-8"))
        if p is None or data.get("status") != "complete":
            log.warning("%s: %s, left incomplete in the footage index", video, data.get("status", "not begun"))
            return None
        media = self._media(data, p)
        rows = track_rows(data, Path(tracks_json).parent, self.model, p.start)
        info = data.get("video_info") or {}
        for attempt in (1, 2):
            try:
                return self._replace(video, p, rows, {**{k: info.get(k) for k in ("fps", "width", "height")},
                                                      "frames": data.get("frames"), "media_file": media})
            except IntegrityError:  # another process ingested it at the same moment: replace again
                if attempt == 2:
                    raise
        return None

    def _replace(self, video: Path, p: _Pending, rows: list[dict], extra: dict) -> int:
        with self.index.writer.begin() as c:
            _remove(c, p.content_hash, self.model_id)
            values = {**self._video_values(video, p.content_hash, c, p.start, p.start_source), **extra}
            vid = int(c.execute(videos.insert().values(**values, status="complete", pipeline_status="complete",
                                                       n_tracks=len(rows))).inserted_primary_key[0])
            cam = values["camera_id"]
            if rows:
                c.execute(tracks.insert(), [{**r, "video_id": vid, "camera_id": cam, "model_id": self.model_id}
                                            for r in rows])
            self.index.bump(c)
        log.info("%s: %d track(s) in the footage index %s (video id %d)", Path(str(video)).name, len(rows),
                 safe_spec(self.index.spec), vid)
        return vid

    def _media(self, data: dict, p: _Pending) -> str | None:
        """The annotated video (else the source) as H.264 in the index's media folder; its file name."""
        outputs = data.get("outputs") or {}
        annotated = Path(outputs["video"]) if outputs.get("video") else None
        src = annotated if annotated is not None and annotated.is_file() else Path(data["video"])
        if not src.is_file():
            return None
        name = f"v{p.content_hash[:16]}-m{self.model.checkpoint_hash[:8]}.mp4"
        fps = float((data.get("video_info") or {}).get("fps") or 0) or None
        return name if browser_copy(src, self.index.media / name, fps=fps) else None


def ingestor_from_cfg(cfg: Any, predictor: Any) -> VideoIngestor | None:
    """TEST.INDEX / TEST.INDEX_MEDIA / TEST.CAMERA / TEST.START_TIME / TEST.START_PATTERN -> an ingestor
    (None when TEST.INDEX is empty)."""
    from cctv.index.store import open_index

    t = cfg.TEST
    if not str(t.INDEX).strip():
        return None
    if t.START_TIME:
        parse_time(t.START_TIME)  # a bad key fails before any video is processed
    index = open_index(t.INDEX, t.INDEX_MEDIA, create=True)
    ckpt = None if hasattr(predictor, "loaded") else (t.PRETRAINED_WEIGHTS or None)  # a checkpoint's Predictor knows
    info = model_info(predictor, ckpt, cfg.METRIC.THRESHOLD)
    return VideoIngestor(index, info, t.CAMERA, t.START_TIME, t.START_PATTERN)
