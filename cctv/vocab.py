"""The query language's vocabulary: what a query may name for one model's attributes and groups.

Pure Python + numpy (no torch, no dataset package): the search front door parses a query against the
index's stored vocabulary before anything heavy is imported. ``cctv.search`` re-exports these names.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterable, Sequence

from configs.errors import UserError
from tools.evaluation.retrieval import Term
from tools.inference.names import BINARY_DISPLAY, NONE, short_names

NEGATIONS = ("not ", "no ", "!", "-", "~")
YES, NO = ("yes", "true", "1", "on", "y"), ("no", "false", "0", "off", "n")


class QueryError(UserError, ValueError):
    """A query, input or search setting that cannot be used; one line naming what is valid."""


@dataclass(frozen=True)
class Group:
    """An attribute group as a checkpoint stores it (``[name, kind, attr, ...]``)."""

    name: str
    kind: str
    attrs: tuple[str, ...]

    def indices(self, attr_names: Sequence[str]) -> list[int]:
        return [list(attr_names).index(a) for a in self.attrs]


def as_group_list(groups: Iterable) -> list[Group]:
    """``[name, kind, attr...]`` entries or objects with ``name`` / ``kind`` / ``attrs`` -> Groups."""
    out = []
    for g in groups:
        if hasattr(g, "attrs"):
            out.append(Group(str(g.name), str(g.kind), tuple(str(a) for a in g.attrs)))
        else:
            out.append(Group(str(g[0]), str(g[1]), tuple(str(a) for a in g[2:])))
    return out


def norm(s: str) -> str:
    """Case-, space- and dash-insensitive key of a name."""
    return " ".join(s.strip().lower().replace("-", "_").split()).replace(" ", "_").strip("/_")


@dataclass
class Vocabulary:
    """What a query may name, for one model's attributes and groups."""

    attr_names: list[str]
    groups: list

    def __post_init__(self) -> None:
        self.groups = as_group_list(self.groups)
        self.index = {norm(a): i for i, a in enumerate(self.attr_names)}
        self.by_group = {norm(g.name): g for g in self.groups}
        self.member_of = {a: g for g in self.groups for a in g.attrs}
        self.display = {}  # "female" -> (attribute, on?)
        for a, (on, off) in BINARY_DISPLAY.items():
            if a in self.attr_names:
                self.display[norm(on)], self.display[norm(off)] = (a, True), (a, False)

    def describe(self) -> str:
        """The valid names, on one line."""
        groups = "; ".join(f"{g.name}=" + "|".join(short_names(g.attrs)) + ("|none" if g.kind == "optional" else "")
                           for g in self.groups)
        loose = [a for a in self.attr_names if a not in self.member_of]
        words = [f"{on}/{off}" for a, (on, off) in BINARY_DISPLAY.items() if a in loose]
        plain = [a for a in loose if a not in BINARY_DISPLAY]
        return f"groups: {groups or '-'}; attributes: {', '.join(words + plain)}"

    def member(self, group: Group, value: str) -> Term:
        v = norm(value)
        idx = group.indices(self.attr_names)
        if v == NONE and group.kind == "optional":
            return Term("none", group=tuple(idx), text=f"{group.name}=none")
        for a, short, i in zip(group.attrs, short_names(group.attrs), idx):
            if v in (norm(a), norm(short)):
                return Term("member", i, tuple(idx), group.kind == "exclusive", text=f"{group.name}={a}")
        raise QueryError(f"unknown value {value.strip()!r} for group {group.name}; valid: "
                         + ", ".join(short_names(group.attrs)) + (", none" if group.kind == "optional" else ""))

    def term(self, raw: str) -> Term:
        """One condition of a query (see ``cctv.search``)."""
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
        k = norm(key)
        if k in self.by_group:
            if value is None:
                raise QueryError(f"'{key.strip()}' is a group: write {self.by_group[k].name}=<value>; "
                                 + self.describe())
            return self.member(self.by_group[k], value)
        if k in self.index:
            return self._attribute(self.attr_names[self.index[k]], value)
        if value is None and k in self.display:
            name, on = self.display[k]
            return Term("attr", self.attr_names.index(name), negate=not on)
        if value is None:
            hits = [g for g in self.groups if k in (norm(s) for s in short_names(g.attrs))]
            if len(hits) == 1:
                return self.member(hits[0], key)
            if len(hits) > 1:
                raise QueryError(f"'{key.strip()}' is a value of several groups ({', '.join(g.name for g in hits)}): "
                                 f"write e.g. {hits[0].name}={key.strip()}")
        raise QueryError(f"unknown attribute {key.strip()!r} in SEARCH.QUERY; valid {self.describe()}")

    def _attribute(self, name: str, value: str | None) -> Term:
        if value is None and name in self.member_of:
            return self.member(self.member_of[name], name)
        if value is None:
            return Term("attr", self.attr_names.index(name))
        return Term("attr", self.attr_names.index(name), negate=self._yes_no(name, value))

    def _yes_no(self, name: str, value: str) -> bool:
        """True when ``name=value`` asks for the attribute to be off."""
        v = norm(value)
        pair = [norm(w) for w in BINARY_DISPLAY.get(name, ())]
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


def vocabulary_key(attr_names: Sequence[str], groups: Iterable) -> tuple:
    """A hashable key of one model's vocabulary (candidates are parsed per vocabulary)."""
    return tuple(attr_names), tuple((g.name, g.kind, g.attrs) for g in as_group_list(groups))

