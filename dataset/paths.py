"""Keep file names from label files inside their data folder."""
from __future__ import annotations

from pathlib import Path

from dataset.base import DataError


def resolve_inside(root: str | Path, relative: str, what: str = "path") -> Path:
    """``root / relative``, refusing anything that escapes ``root`` (e.g. ``../../etc/passwd``)."""
    root = Path(root).resolve()
    path = (root / relative).resolve()
    if path != root and root not in path.parents:
        raise DataError(f"{what} resolves outside the image folder {root}: '{relative}' (fix the label file)")
    return path
