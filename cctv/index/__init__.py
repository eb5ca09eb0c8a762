"""The footage index: every processed video of every camera in one database (SQLite file or PostgreSQL).

``store`` (schema, opening), ``ingest`` (one transaction per video), ``search`` (attribute, free-text and
by-example queries with camera / time / duration filters), ``freetext`` (plain English -> the query
language), ``media`` (browser-playable H.264 videos, thumbnails), ``vectors`` (the FAISS embedding index).
Nothing here imports torch: an attribute query needs no model.
"""
from __future__ import annotations

from pathlib import Path

URL_SCHEMES = ("postgresql://", "postgres://", "postgresql+psycopg://")
FILE_SUFFIXES = (".sqlite", ".sqlite3", ".db")


def is_index_spec(spec: str) -> bool:
    """True for a postgresql:// URL or a path ending .sqlite / .sqlite3 / .db (existing or not)."""
    s = str(spec).strip()
    return s.lower().startswith(URL_SCHEMES) or (s.lower().endswith(FILE_SUFFIXES) and "," not in s)


def missing_index(spec: str) -> str | None:
    """The one-line message for an index file that does not exist (checked before SQLAlchemy is imported)."""
    s = str(spec).strip()
    if s.lower().startswith(URL_SCHEMES) or Path(s).is_file():
        return None
    return (f"footage index '{s}' does not exist; run --mode video with TEST.INDEX {s} first, or give SEARCH.IN "
            "an existing .sqlite file or postgresql:// URL")
