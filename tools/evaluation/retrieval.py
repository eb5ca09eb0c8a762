"""Attribute-based person retrieval (UPAR challenge task 2) and the joint probability it shares with search.

A query is a combination of attribute conditions (``Term``); an image's score for it is the joint
probability of the conditions under its predicted attribute probabilities, taken as independent:

* a binary attribute: ``p`` (or ``1 - p`` negated);
* one value of an ``exclusive`` group: that member's probability normalised over the group's members
  (the group takes exactly one value);
* one member of an ``optional`` group: its own ``p``; the group's ``none``: the product of ``1 - p``
  over its members.

``retrieval_metrics`` runs every distinct combination present in a labelled split as a query over the
split's images (relevant = exact match of the combination) and reports mAP and rank-1/5/10. Under the
UPAR protocol (the default) every attribute is one binary term, as UPAR defines its 40 attributes (a
person may wear several colours); unknown labels are handled per term and every exclusion is counted.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

EPS = 1e-12  # probabilities are clipped to [EPS, 1] before logs
UNKNOWN = -1


@dataclass(frozen=True)
class Term:
    """One condition. ``kind``: ``attr`` (attribute ``index`` is on), ``member`` (the group whose attribute
    indices are ``group`` takes the value at ``index``), ``none`` (an optional group takes none of them)."""

    kind: str
    index: int = -1
    group: tuple[int, ...] = ()
    exclusive: bool = False
    negate: bool = False
    text: str = ""  # how it reads (for outputs)


def term_probability(probs: np.ndarray, term: Term) -> np.ndarray:
    """(N,) probability of ``term`` for each row of (N, A) ``probs``."""
    p = np.asarray(probs, np.float64)
    if term.kind == "attr":
        out = p[:, term.index]
    elif term.kind == "member" and term.exclusive:
        out = p[:, term.index] / np.maximum(p[:, list(term.group)].sum(1), EPS)
    elif term.kind == "member":
        out = p[:, term.index]
    elif term.kind == "none":
        out = np.prod(1.0 - p[:, list(term.group)], axis=1)
    else:
        raise ValueError(f"unknown term kind {term.kind!r}")
    out = np.clip(out, 0.0, 1.0)
    return 1.0 - out if term.negate else out


def joint_probability(probs: np.ndarray, terms: Sequence[Term]) -> np.ndarray:
    """(N,) product of the terms' probabilities (independent conditions); 1 for no terms."""
    p = np.asarray(probs, np.float64)
    out = np.ones(len(p), np.float64)
    for t in terms:
        out *= term_probability(p, t)
    return out


PROTOCOLS = ("upar", "groups")


def _components(attr_names: Sequence[str], groups: Iterable, subset: Sequence[str] | None,
                protocol: str = "upar") -> list[tuple]:
    """(name, kind, indices) per component of the combination: a group (``exclusive`` / ``optional``) or
    one attribute (``attr``). ``subset``: group or attribute names; empty = every group and every
    attribute outside the groups. ``protocol`` upar: every group is split into its member attributes
    (UPAR's 40 attributes are each binary: a person may wear several upper-body colours)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"retrieval protocol {protocol!r} is not one of {', '.join(PROTOCOLS)}")
    names = list(attr_names)
    gl = [(str(g[0]), str(g[1]), [names.index(a) for a in g[2:]]) if isinstance(g, (list, tuple))
          else (g.name, g.kind, g.indices(names)) for g in groups]
    by_name = {g[0]: g for g in gl}
    if not subset:
        grouped = {i for _, _, idx in gl for i in idx}
        out = gl + [(a, "attr", [i]) for i, a in enumerate(names) if i not in grouped]
    else:
        out = []
        for s in subset:
            if s in by_name:
                out.append(by_name[s])
            elif s in names:
                out.append((s, "attr", [names.index(s)]))
            else:
                raise ValueError(f"retrieval subset names {s!r}, which is neither a group "
                                 f"({', '.join(by_name) or '-'}) nor an attribute")
    if protocol == "upar":
        out = [(names[i], "attr", [i]) for _, _, idx in out for i in idx]
    return out


def _label_values(labels: np.ndarray, comp: tuple) -> tuple[np.ndarray, np.ndarray]:
    """(N,) value code of one component per row: attr 0/1, group member position (optional: len = none),
    -1 where the labels do not define it; and (N,) True where that is because an exclusive group's labels
    have not exactly one member on (ill-defined, rather than not annotated)."""
    _, kind, idx = comp
    y = labels[:, idx]
    bad = (y == UNKNOWN).any(1)
    ill = np.zeros(len(y), bool)
    if kind == "attr":
        v = (y[:, 0] > 0.5).astype(int)
    else:
        on = y > 0.5
        count = on.sum(1)
        v = np.where(count == 1, on.argmax(1), len(idx))
        ill = ~bad & ((count > 1) | ((count == 0) & (kind == "exclusive")))
    return np.where(bad | ill, -1, v), ill


def _value_log_probs(probs: np.ndarray, comp: tuple) -> np.ndarray:
    """(N, V) log-probability of each value code of one component (same rules as ``term_probability``)."""
    _, kind, idx = comp
    if kind == "attr":
        terms = [Term("attr", idx[0], negate=True), Term("attr", idx[0])]
    else:
        terms = [Term("member", i, tuple(idx), exclusive=kind == "exclusive") for i in idx]
        if kind == "optional":
            terms.append(Term("none", group=tuple(idx)))
    return np.log(np.clip(np.stack([term_probability(probs, t) for t in terms], 1), EPS, 1.0))


def average_precision(scores: np.ndarray, relevant: np.ndarray) -> tuple[float, np.ndarray]:
    """AP of one ranking (ties kept in gallery order) and the relevance of the ranked list."""
    order = np.argsort(-scores, kind="stable")
    rel = relevant[order]
    hits = np.cumsum(rel)
    ranks = np.flatnonzero(rel) + 1
    ap = float((hits[rel] / ranks).mean()) if len(ranks) else 0.0
    return ap, rel


def _query_hits(codes: np.ndarray, logp: list[np.ndarray], q: np.ndarray, ks: Sequence[int]) -> tuple:
    """AP, hit-at-k flags and the number of images left out of one query's ranking.

    Per term: an image whose known terms all match but some term is undefined cannot be called relevant
    or irrelevant and is left out of this query only; one known mismatching term makes it irrelevant."""
    known = codes >= 0
    mismatch = ((codes != q) & known).any(1)
    undetermined = ~mismatch & ~known.all(1)
    keep = ~undetermined
    score = np.asarray(sum(lp[keep, v] for lp, v in zip(logp, q)), np.float64)
    ap, rel = average_precision(score, ~mismatch[keep])
    return ap, [bool(rel[:k].any()) for k in ks], int(undetermined.sum())


def retrieval_metrics(probs: np.ndarray, labels: np.ndarray, attr_names: Sequence[str], groups: Iterable = (), *,
                      subset: Sequence[str] | None = None, ks: Sequence[int] = (1, 5, 10),
                      protocol: str = "upar") -> dict[str, float]:
    """Attribute-combination retrieval on one split.

    Queries = the distinct combinations (over ``subset``: group / attribute names, empty = all) that the
    (N, A) ``labels`` of the images with every term defined hold; gallery = the split's images, ranked per
    query by the joint probability of the combination under (N, A) ``probs``; relevant = exactly that
    combination. ``protocol`` upar: every attribute is one binary term (colours are not exclusive);
    groups: the groups' kinds (an exclusive group takes one value). Nothing is dropped silently: an image
    with an undefined term (unknown label; groups: an exclusive group without exactly one member on) is
    still ranked for every query one of its known terms contradicts, and left out only of the queries its
    known terms match (counted: ``retrieval_excluded_mean`` per query). Returns ``retrieval_mAP``,
    ``retrieval_rank{k}``, ``retrieval_queries``, ``retrieval_gallery``, ``retrieval_images_with_unknown``,
    ``retrieval_ill_defined`` and ``retrieval_excluded_mean``.
    """
    probs, labels = np.asarray(probs, np.float64), np.asarray(labels)
    if probs.shape != labels.shape or probs.ndim != 2 or probs.shape[1] != len(attr_names):
        raise ValueError(f"probs {probs.shape} and labels {labels.shape} must both be (N, {len(attr_names)})")
    comps = _components(attr_names, groups, subset, protocol)
    coded = [_label_values(labels, c) for c in comps]
    codes = np.stack([c for c, _ in coded], 1) if comps else np.zeros((len(labels), 0), int)
    ill = np.stack([i for _, i in coded], 1).any(1) if comps else np.zeros(len(labels), bool)
    complete = (codes >= 0).all(1)
    logp = [_value_log_probs(probs, c) for c in comps]
    queries = np.unique(codes[complete], axis=0)
    aps, hits, excluded = [], {k: [] for k in ks}, []
    for q in queries:
        ap, flags, n_out = _query_hits(codes, logp, q, ks)
        aps.append(ap)
        excluded.append(n_out)
        for k, f in zip(ks, flags):
            hits[k].append(f)
    out = {"retrieval_mAP": float(np.mean(aps)) if aps else 0.0}
    out.update({f"retrieval_rank{k}": float(np.mean(v)) if v else 0.0 for k, v in hits.items()})
    out.update({"retrieval_queries": len(queries), "retrieval_gallery": int(len(codes)),
                "retrieval_images_with_unknown": int((~complete).sum()), "retrieval_ill_defined": int(ill.sum()),
                "retrieval_excluded_mean": float(np.mean(excluded)) if excluded else 0.0})
    return out
