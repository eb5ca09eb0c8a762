"""The footage index's schema and how it is opened (SQLAlchemy Core: the same tables and queries on an
embedded SQLite file and on PostgreSQL; every value goes in as a bound parameter).

Tables: ``cameras`` (name), ``models`` (checkpoint hash, attribute names, groups, thresholds, decoding,
embedding size), ``videos`` (path, content hash, camera, wall-clock start and where it came from, fps,
frames, size, model, status ``incomplete`` | ``complete``, the browser-playable media file),
``tracks`` (per track: frames, wall-clock start / end, duration, boxes, thumbnail JPEG, attribute
probabilities as float32 bytes, labels with confidences, unit embedding as float16 bytes), ``state``
(a revision counter every ingest bumps: readers reload what changed).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import (Boolean, Column, Float, ForeignKey, Index, Integer, LargeBinary, MetaData, String, Table,
                        Text, UniqueConstraint, create_engine, event, select, text, update)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from cctv.index import URL_SCHEMES, is_index_spec, missing_index  # noqa: F401 (re-exported)
from cctv.vocab import QueryError

log = logging.getLogger(__name__)

metadata = MetaData()
cameras = Table("cameras", metadata, Column("id", Integer, primary_key=True),
                Column("name", String(200), nullable=False, unique=True))
models = Table("models", metadata, Column("id", Integer, primary_key=True),
               Column("checkpoint_hash", String(64), nullable=False, unique=True), Column("name", Text),
               Column("attr_names", Text, nullable=False), Column("groups", Text, nullable=False),
               Column("thresholds", Text, nullable=False), Column("group_argmax", Boolean, nullable=False),
               Column("embed_dim", Integer, nullable=False, default=0))
videos = Table("videos", metadata, Column("id", Integer, primary_key=True), Column("path", Text, nullable=False),
               Column("content_hash", String(64), nullable=False),
               Column("camera_id", Integer, ForeignKey("cameras.id"), nullable=False),
               Column("model_id", Integer, ForeignKey("models.id"), nullable=False),
               Column("start_time", Float, nullable=False), Column("start_source", String(20), nullable=False),
               Column("fps", Float), Column("frames", Integer), Column("width", Integer), Column("height", Integer),
               Column("status", String(12), nullable=False), Column("pipeline_status", String(20)),
               Column("media_file", String(200)), Column("n_tracks", Integer, default=0),
               Column("ingested_at", Float), Column("host", String(200)),
               UniqueConstraint("content_hash", "model_id", name="uq_video_content_model"))
tracks = Table("tracks", metadata, Column("id", Integer, primary_key=True),
               Column("video_id", Integer, ForeignKey("videos.id"), nullable=False),
               Column("camera_id", Integer, nullable=False), Column("model_id", Integer, nullable=False),
               Column("track_id", Integer, nullable=False), Column("first_frame", Integer),
               Column("last_frame", Integer), Column("start_time", Float, nullable=False),
               Column("end_time", Float, nullable=False), Column("duration", Float, nullable=False),
               Column("frames_seen", Integer), Column("boxes", Text), Column("labels", Text),
               Column("probs", LargeBinary), Column("embedding", LargeBinary), Column("thumbnail", LargeBinary),
               Column("thumb_frame", Integer))
state = Table("state", metadata, Column("id", Integer, primary_key=True), Column("revision", Integer, nullable=False))
Index("ix_tracks_video", tracks.c.video_id)
Index("ix_tracks_start", tracks.c.start_time)
Index("ix_videos_camera", videos.c.camera_id)


def _url(spec: str) -> str:
    s = spec.strip()
    if s.lower().startswith(URL_SCHEMES):
        return "postgresql+psycopg://" + s.split("://", 1)[1]  # psycopg 3, the maintained driver
    return "sqlite:///" + str(Path(s).resolve())


def _sqlite_events(engine: Engine, immediate: bool) -> None:
    """WAL (readers never wait for a writer), a long busy timeout (several ingest processes), and
    ``BEGIN IMMEDIATE`` on the writer's transactions (no lock upgrade deadlock between two writers)."""
    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn, _record) -> None:
        dbapi_conn.isolation_level = None  # SQLAlchemy's begin event emits BEGIN itself
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA busy_timeout = 120000")
        cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA synchronous = NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


@dataclass
class FootageIndex:
    """An open index: ``engine`` for reads, ``writer`` for ingest transactions, ``media`` for its videos."""

    spec: str
    engine: Engine
    writer: Engine
    media: Path

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    def revision(self) -> int:
        with self.engine.connect() as c:
            return int(c.execute(select(state.c.revision).where(state.c.id == 1)).scalar() or 0)

    def bump(self, conn) -> None:
        """Inside a write transaction: readers see that the index changed."""
        conn.execute(update(state).where(state.c.id == 1).values(revision=state.c.revision + 1))

    def close(self) -> None:
        self.engine.dispose()
        self.writer.dispose()


def _engines(spec: str) -> tuple[Engine, Engine]:
    url = _url(spec)
    if url.startswith("sqlite"):
        reader = create_engine(url, connect_args={"timeout": 120, "check_same_thread": False})
        writer = create_engine(url, connect_args={"timeout": 120, "check_same_thread": False})
        _sqlite_events(reader, immediate=False)
        _sqlite_events(writer, immediate=True)
        return reader, writer
    engine = create_engine(url, pool_pre_ping=True)
    return engine, engine


def media_dir(spec: str, media: str = "") -> Path:
    """The index's own media folder: ``media`` (TEST.INDEX_MEDIA) or ``<index file>.media``;
    for a URL without TEST.INDEX_MEDIA, ``exp_results/footage_media``."""
    if media:
        return Path(media)
    if str(spec).lower().startswith(URL_SCHEMES):
        return Path("exp_results") / "footage_media"
    return Path(str(spec) + ".media")


def open_index(spec: str, media: str = "", create: bool = False) -> FootageIndex:
    """Open (``create``: create when missing) the index at ``spec``; ``QueryError`` (one line) when it is
    missing, not an index, or the server cannot be reached."""
    spec = str(spec).strip()
    if not spec.lower().startswith(URL_SCHEMES):
        if not create and missing_index(spec):
            raise QueryError(missing_index(spec))
        Path(spec).parent.mkdir(parents=True, exist_ok=True)
    reader, writer = _engines(spec)
    index = FootageIndex(spec, reader, writer, media_dir(spec, media))
    try:
        _prepare(index, create)
    except SQLAlchemyError as e:
        index.close()
        first = str(getattr(e, "orig", e) or e).strip().splitlines()[0][:200]
        raise QueryError(f"footage index '{safe_spec(spec)}' cannot be opened ({type(e).__name__}: {first}); check the "
                         "path / URL, that the server runs and that it is an index written by --mode video") from None
    return index


def safe_spec(spec: str) -> str:
    """The spec without a password (for messages)."""
    if "://" in spec and "@" in spec:
        scheme, rest = spec.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return spec


def _prepare(index: FootageIndex, create: bool) -> None:
    if create:
        metadata.create_all(index.writer, checkfirst=True)
        with index.writer.begin() as c:
            if c.execute(select(state.c.id).where(state.c.id == 1)).first() is None:
                c.execute(state.insert().values(id=1, revision=0))
    else:
        with index.engine.connect() as c:
            c.execute(select(state.c.revision).where(state.c.id == 1)).first()


def host_name() -> str:
    return os.uname().nodename if hasattr(os, "uname") else "?"


def ping(index: FootageIndex) -> None:
    with index.engine.connect() as c:
        c.execute(text("SELECT 1"))
