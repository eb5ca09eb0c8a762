"""What a condition's probability means, decided once for the search score, the decoded labels and the
confidences shown beside them (search over tracks JSON / crops, the footage index, the web app).

For (A,) attribute probabilities ``p`` of one model, with its per-attribute thresholds ``t`` and its
decoding (``group_argmax``, as ``tools.inference.labels.LabelDecoder`` decodes):

* an attribute: ``p`` (negated ``1 - p``); shown when ``p > t`` (``predicted_positive``, the rule of the metrics);
* a member ``m`` of an ``exclusive`` group decoded by arg-max: ``p_m / sum(p_group)`` (the group takes
  exactly one value; the label is the arg-max, i.e. the member with the highest such probability);
* a member ``m`` of any other group (``optional``, or ``exclusive`` decoded by threshold): ``p_m`` times
  ``1 - p_o`` for every member ``o`` more likely than ``m`` (on a tie: listed before it, as arg-max breaks
  ties): "m is on and no likelier member is". For the
  arg-max member that is ``p_m``, so the label shows ``m`` exactly when this probability clears ``t_m``;
  any other member scores at most 0.25, below every threshold in use. A colour whose own probability is
  0.19 therefore scores 0.19 (label ``none``), never 0.92 by normalising inside a group whose members are
  all unlikely;
* such a group's ``none``: ``1 - max(p_group)`` (the label is ``none`` exactly when the arg-max misses its
  threshold).

The query's score is the product of its conditions (taken as independent). The UPAR retrieval metrics
(``tools.evaluation.retrieval``) keep their own published definition.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from tools.evaluation.metrics import predicted_positive
from tools.evaluation.retrieval import Term
from tools.inference.names import BINARY_DISPLAY, NONE, short_names

from cctv.vocab import Group, as_group_list


def _term(col, term: Term, group_argmax: bool) -> np.ndarray:
    """``term``'s probability from ``col(i)``, the (N,) probabilities of attribute ``i`` (see the module doc)."""
    if term.kind == "attr":
        out = col(term.index)
    elif term.kind == "member" and term.exclusive and group_argmax:
        out = col(term.index) / np.maximum(sum(col(i) for i in term.group), 1e-12)
    elif term.kind == "member":
        m, me = col(term.index), list(term.group).index(term.index)
        out = m.copy()
        for k, o in enumerate(term.group):  # times 1 - p_o for every likelier member o (ties: the earlier one)
            if o != term.index:
                po = col(o)
                out *= np.where((po > m) | ((po == m) & (k < me)), 1.0 - po, 1.0)
    elif term.kind == "none":
        out = 1.0 - np.maximum.reduce([col(i) for i in term.group])
    else:
        raise ValueError(f"unknown term kind {term.kind!r}")
    out = np.clip(out, 0.0, 1.0)
    return 1.0 - out if term.negate else out


def term_probability(probs: np.ndarray, term: Term, group_argmax: bool = False) -> np.ndarray:
    """(N,) probability of ``term`` for each row of (N, A) ``probs`` (see the module doc)."""
    p = np.asarray(probs, np.float64)
    if p.ndim == 1:
        p = p[None]
    return _term(lambda i: p[:, i], term, group_argmax)


def member_table(pg: np.ndarray, exclusive: bool, group_argmax: bool = False) -> np.ndarray:
    """(N, G) probability of "the group's value is member j" for every member at once, from the group's (N, G)
    probabilities ``pg`` (the rule of ``term_probability``; one sort per row instead of a pass per member)."""
    pg = np.asarray(pg)
    if exclusive and group_argmax:
        return pg / np.maximum(pg.sum(1, keepdims=True), 1e-12)
    order = np.argsort(-pg, axis=1, kind="stable")  # likeliest first, ties in member order
    ranked = np.take_along_axis(pg, order, 1)
    before = np.cumprod(np.concatenate([np.ones_like(ranked[:, :1]), 1.0 - ranked[:, :-1]], 1), 1)
    out = np.empty_like(pg)
    np.put_along_axis(out, order, ranked * before, 1)
    return np.clip(out, 0.0, 1.0)


def joint_probability(probs: np.ndarray, terms: Sequence[Term], group_argmax: bool = False) -> np.ndarray:
    """(N,) product of the terms' probabilities; 1 for no terms."""
    p = np.asarray(probs, np.float64)
    out = np.ones(len(p), np.float64)
    for t in terms:
        out *= term_probability(p, t, group_argmax)
    return out


def _group_label(p: np.ndarray, g: Group, names: list[str], t: np.ndarray, group_argmax: bool) -> dict:
    idx = g.indices(names)
    best = int(np.argmax(p[idx]))
    exclusive = g.kind == "exclusive"
    on = (exclusive and group_argmax) or bool(predicted_positive(p[idx[best]], t[idx[best]]))
    if on:
        term = Term("member", idx[best], tuple(idx), exclusive)
        conf = float(term_probability(p, term, group_argmax)[0])
        return {"key": g.name, "value": g.attrs[best], "p": round(conf, 4),
                "text": f"{g.name}: {short_names(g.attrs)[best]}"}
    conf = float(term_probability(p, Term("none", group=tuple(idx)), group_argmax)[0])
    return {"key": g.name, "value": NONE, "p": round(conf, 4), "text": f"{g.name}: none"}


def labels_with_confidence(probs: np.ndarray, attr_names: Sequence[str], groups: list,
                           thresholds: float | Sequence[float] = 0.5, group_argmax: bool = False) -> list[dict]:
    """The decoded labels (as ``LabelDecoder`` decodes them) each with the probability of the condition it
    states: ``[{"key", "value", "text", "p"}]``: two-way attributes, then groups, then present attributes
    (most likely first); optional groups decoded as none are left out, as on the annotated video."""
    p, names = np.asarray(probs, np.float64).reshape(-1), list(attr_names)
    t = np.broadcast_to(np.asarray(thresholds, np.float64).reshape(-1), (len(names),))
    grouped = {a for g in as_group_list(groups) for a in g.attrs}
    out, present = [], []
    for i, a in enumerate(names):
        if a in grouped:
            continue
        if a in BINARY_DISPLAY:
            on = bool(predicted_positive(p[i], t[i]))
            out.append({"key": a, "value": BINARY_DISPLAY[a][0 if on else 1], "text": BINARY_DISPLAY[a][0 if on else 1],
                        "p": round(float(p[i] if on else 1 - p[i]), 4)})
        elif predicted_positive(p[i], t[i]):
            present.append({"key": a, "value": "yes", "text": a, "p": round(float(p[i]), 4)})
    for g in as_group_list(groups):
        lab = _group_label(p, g, names, t, group_argmax)
        if not (lab["value"] == NONE and g.kind == "optional"):
            out.append(lab)
    return out + sorted(present, key=lambda d: -d["p"])
