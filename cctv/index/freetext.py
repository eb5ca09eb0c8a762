"""Plain English -> the query language, on one model's vocabulary.

    "woman in a red top with a backpack, no hat"  ->  "female, upper_colour=red, Backpack, not Hat"

Words are looked up in a table of synonyms (woman / lady / girl -> female; top / shirt / jacket -> the
upper-body colour group; rucksack -> Backpack; cap -> Hat ...); a colour is given to the garment it
stands next to (upper body when no garment says otherwise); "no", "not", "without" negate the next
thing named. Filler words (a, in, with, wearing ...) are skipped; every other word the model's vocabulary
cannot express is returned in ``unknown``, so the caller names it in its reply and never drops it silently.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from tools.inference.names import BINARY_DISPLAY, short_names

from cctv.vocab import QueryError, Vocabulary, norm

FILLER = set("a an the in on of with and or wearing wears wear dressed carrying carries carry holding holds who "
             "is are has have having person people someone somebody anyone guy's that which walking standing "
             "some any colour color coloured colored clothes clothing also".split())
NEGATE = {"no", "not", "without", "non", "never", "none"}
WORDS = {  # word -> a name of the query language (resolved against the model's vocabulary)
    "woman": "female", "women": "female", "lady": "female", "ladies": "female", "girl": "female",
    "female": "female", "she": "female", "her": "female",
    "man": "male", "men": "male", "male": "male", "guy": "male", "boy": "male", "gentleman": "male",
    "he": "male", "him": "male",
    "child": "young", "kid": "young", "teen": "young", "teenager": "young", "young": "young", "youth": "young",
    "adult": "adult", "old": "old", "elderly": "old", "senior": "old", "aged": "old",
    "backpack": "Backpack", "rucksack": "Backpack", "knapsack": "Backpack",
    "bag": "Bag", "handbag": "Bag", "purse": "Bag", "tote": "Bag", "satchel": "Bag",
    "glasses": "Glasses", "spectacles": "Glasses", "eyeglasses": "Glasses",
    "sunglasses": "Sunglasses", "shades": "Sunglasses",
    "hat": "Hat", "cap": "Hat", "beanie": "Hat", "hood": "Hat", "helmet": "Hat",
    "bald": "hair=bald",
}
PHRASES = {"long hair": "hair=long", "short hair": "hair=short", "short sleeves": "Upper_short",
           "short sleeve": "Upper_short", "short sleeved": "Upper_short", "shoulder bag": "Bag",
           "hand bag": "Bag", "sun glasses": "Sunglasses"}
UPPER = set("top shirt tshirt t_shirt blouse jacket coat sweater jumper hoodie vest upper cardigan jersey "
            "pullover sweatshirt".split())
LOWER = set("trousers pants jeans skirt shorts lower bottoms leggings slacks".split())
COLOURS = {"gray": "grey", "navy": "blue", "maroon": "red", "crimson": "red", "beige": "brown", "tan": "brown",
           "violet": "purple"}


@dataclass
class Reading:
    """How a free-text query was read: the conditions (query language), and the words it could not use."""

    conditions: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)

    @property
    def query(self) -> str:
        return ", ".join(self.conditions)


def _tokens(text: str) -> list[str]:
    return [t for t in re.split(r"[^a-z0-9_']+", text.lower().replace("t-shirt", "tshirt").replace("-", " ")) if t]


def _colour_groups(vocab: Vocabulary, colour: str) -> list:
    return [g for g in vocab.groups if colour in (norm(s) for s in short_names(g.attrs))]


def _colour(vocab: Vocabulary, colour: str, garment: str | None) -> str | None:
    """``upper_colour=red`` for "red" (+ garment) when the model has such a group member."""
    hits = _colour_groups(vocab, colour)
    if garment is not None and len(hits) > 1:
        side = "up" if garment in UPPER else "low"
        hits = [g for g in hits if side in g.name.lower()] or hits
    elif len(hits) > 1:  # no garment named: the upper body, the most visible
        hits = [g for g in hits if "up" in g.name.lower()] or hits
    return f"{hits[0].name}={colour}" if hits else None


def canonical(vocab: Vocabulary, name: str) -> str:
    """A condition as the query language writes it in full: "old" -> "age=old", "U_red" -> "upper_colour=red",
    "Gender_female=no" -> "male", "!Hat" -> "not Hat"."""
    t = vocab.term(name)
    if t.kind == "none":
        g = vocab.member_of[vocab.attr_names[t.group[0]]]
        base, negate = f"{g.name}=none", t.negate
    elif t.kind == "member":
        attr = vocab.attr_names[t.index]
        g = vocab.member_of[attr]
        base, negate = f"{g.name}={short_names(g.attrs)[g.attrs.index(attr)]}", t.negate
    elif vocab.attr_names[t.index] in BINARY_DISPLAY:
        return BINARY_DISPLAY[vocab.attr_names[t.index]][1 if t.negate else 0]
    else:
        base, negate = vocab.attr_names[t.index], t.negate
    return f"not {base}" if negate else base


def _known(vocab: Vocabulary, name: str) -> bool:
    try:
        vocab.term(name)
        return True
    except QueryError:
        return False


class _Reader:
    def __init__(self, vocab: Vocabulary, text: str):
        self.vocab, self.toks, self.i, self.negate = vocab, _tokens(text), 0, False
        self.out = Reading()

    def add(self, name: str | None, words: str) -> None:
        if name is None or not _known(self.vocab, name):
            self.out.unknown.append(words)
        else:
            cond = canonical(self.vocab, ("not " + name) if self.negate else name)
            if cond not in self.out.conditions:
                self.out.conditions.append(cond)
        self.negate = False

    def step(self) -> None:
        t, nxt = self.toks[self.i], self.toks[self.i + 1] if self.i + 1 < len(self.toks) else ""
        pair = f"{t} {nxt}"
        if pair in PHRASES:
            self.add(PHRASES[pair], pair)
            self.i += 2
        elif t in NEGATE:
            self.negate, self.i = True, self.i + 1
        elif COLOURS.get(t, t) in _all_colours(self.vocab):
            garment = nxt if nxt in UPPER | LOWER else None
            self.add(_colour(self.vocab, COLOURS.get(t, t), garment), f"{t} {garment}" if garment else t)
            self.i += 2 if garment else 1
        elif t in WORDS:
            self.add(WORDS[t], t)
            self.i += 1
        elif t in FILLER or t in UPPER | LOWER:  # a garment alone says nothing the model predicts
            self.i += 1
        else:
            self.add(t if _known(self.vocab, t) else None, t)
            self.i += 1


def _all_colours(vocab: Vocabulary) -> set[str]:
    return {norm(s) for g in vocab.groups if "colo" in g.name.lower() for s in short_names(g.attrs)}


def read_free_text(text: str, vocab: Vocabulary) -> Reading:
    """The conditions ``text`` asks for on ``vocab`` and the words it could not express (see the module doc)."""
    reader = _Reader(vocab, text)
    while reader.i < len(reader.toks):
        reader.step()
    return reader.out


def looks_structured(query: str, vocab: Vocabulary) -> bool:
    """True when every comma-separated part is a condition of the query language on ``vocab``."""
    parts = [p for p in str(query).split(",") if p.strip()]
    return bool(parts) and all(_known(vocab, p) for p in parts)


@dataclass
class QueryReading:
    """How a query was read on one model: conditions as the query language writes them, terms, unknown words."""

    query: str
    terms: list
    unknown: list[str]


def read_query(text: str, vocab: Vocabulary, strict: bool = False) -> QueryReading:
    """The query language when every comma-separated part parses, else free text. ``QueryError`` when nothing
    can be read, or (``strict``, the command line) when a word is unknown."""
    if looks_structured(text, vocab):
        parts = [p.strip() for p in text.split(",") if p.strip()]
        return QueryReading(", ".join(canonical(vocab, p) for p in parts), [vocab.term(p) for p in parts], [])
    r = read_free_text(text, vocab)
    if not r.conditions or (strict and r.unknown):
        words = ", ".join(repr(w) for w in r.unknown) or repr(text)
        read = f" (read so far: {r.query})" if r.conditions else ""
        raise QueryError(f"unknown word(s) {words} in the query{read}; use the query language with the names "
                         f"{vocab.describe()}, or plain words such as 'woman in a red top with a backpack, no hat'")
    return QueryReading(r.query, [vocab.term(c) for c in r.conditions], r.unknown)


def check_query(text: str, vocabularies: list[tuple[Any, Any]]) -> None:
    """``QueryError`` unless ``text`` reads strictly on one of the (attribute names, groups) vocabularies."""
    errors = []
    for names, groups in vocabularies:
        try:
            read_query(text, Vocabulary(list(names), list(groups)), strict=True)
            return
        except QueryError as e:
            errors.append(e)
    if errors:
        raise errors[0]
