"""The footage index: every processed video of every camera in one database (SQLite file or PostgreSQL).

``store`` (schema, opening), ``ingest`` (one transaction per video), ``search`` (attribute, free-text and
by-example queries with camera / time / duration filters), ``freetext`` (plain English -> the query
language), ``media`` (browser-playable H.264 videos, thumbnails), ``vectors`` (the FAISS embedding index).
Nothing here imports torch: an attribute query needs no model.
"""
from __future__ import annotations

from contextlib import closing
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


def precheck_query(spec: str, text: str) -> None:
    """An SQLite index's unknown query words as a one-line ``QueryError`` before SQLAlchemy is imported: the
    vocabularies are read with the standard library (a fixed, read-only statement; nothing from the query)."""
    import json
    import sqlite3

    s = str(spec).strip()
    if not text.strip() or s.lower().startswith(URL_SCHEMES):
        return
    try:
        with closing(sqlite3.connect(Path(s).resolve().as_uri() + "?mode=ro", uri=True)) as con:
            rows = con.execute("SELECT attr_names, groups FROM models").fetchall()
    except sqlite3.Error:
        return  # not (yet) an index: the full open says what is wrong
    vocabularies = [(json.loads(a), json.loads(g)) for a, g in rows if json.loads(a)]
    from cctv.index.freetext import check_query

    check_query(text, vocabularies)
