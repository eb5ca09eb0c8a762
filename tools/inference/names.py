"""Display names shared by label decoding and the query language (no torch, no dataset import: the search
front door reads them before any model is loaded)."""
from __future__ import annotations

from typing import Sequence

NONE = "none"

# Display strings only: an ungrouped binary attribute whose "off" state also has a name.
# Any attribute not listed here is shown by its own name when present.
BINARY_DISPLAY: dict[str, tuple[str, str]] = {
    "Gender_female": ("female", "male"),
    "Female": ("female", "male"),
    "personalMale": ("male", "female"),
}


def short_names(attrs: Sequence[str]) -> list[str]:
    """Members without the ``word_`` prefix most of them share, and without decorations:
    U_black, U_blue, ////U_Others//// -> black, blue, Others."""
    clean = [a.strip("/ ") or a for a in attrs]
    heads = [c.split("_", 1)[0] + "_" for c in clean if "_" in c.strip("_")]
    if len(attrs) < 2 or not heads:
        return clean
    head = max(set(heads), key=heads.count)
    if heads.count(head) * 2 <= len(attrs):  # no prefix shared by a majority: keep the names
        return clean
    return [c[len(head):] if c.startswith(head) and len(c) > len(head) else c for c in clean]
