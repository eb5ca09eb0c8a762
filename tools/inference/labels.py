"""Probabilities -> readable labels, from the attribute groups of a checkpoint's inference contract.

The groups are the same ``AttrGroup`` definitions the categorical loss trains with (one source of
truth). With group arg-max decoding (``METRIC.GROUP_ARGMAX``, as the metrics decode) an
``exclusive`` group yields its arg-max member; without it, as the metrics threshold each attribute,
it yields its arg-max member only when that clears its threshold (else ``"none"``). An
``optional`` group always does the latter, and every ungrouped attribute is listed when its
probability clears its threshold (one threshold per attribute). "Clears" is the metrics' rule
(``tools.evaluation.metrics.predicted_positive``): strictly above, so a probability equal to the
threshold is absent, as in Rethinking_of_PAR.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from dataset.base import AttrGroup, groups_from_cfg
from tools.evaluation.metrics import predicted_positive
from tools.inference.names import BINARY_DISPLAY, NONE, short_names as _short_names  # noqa: F401 (re-exported)


def as_groups(groups: Iterable) -> list[AttrGroup]:
    """Accept AttrGroup objects or checkpoint/config entries ``[name, kind, attr, ...]``."""
    groups = list(groups)
    if all(isinstance(g, AttrGroup) for g in groups):
        return groups
    return groups_from_cfg([list(g) for g in groups])


class LabelDecoder:
    """Decode (A,) probabilities of ``attr_names`` into ``{group: member, attr: display, "present": [...]}``."""

    def __init__(self, attr_names: Sequence[str], groups: Iterable, threshold: float | Sequence[float] = 0.5,
                 group_argmax: bool = True):
        self.attr_names = list(attr_names)
        self.groups = as_groups(groups)
        t = np.asarray(threshold, dtype=np.float64).reshape(-1)
        if t.size not in (1, len(self.attr_names)):
            raise ValueError(f"got {t.size} thresholds for {len(self.attr_names)} attributes; give one or one each")
        self.thresholds = np.broadcast_to(t, (len(self.attr_names),)).copy()
        self.group_argmax = bool(group_argmax)
        grouped: set[str] = set()
        self._group_idx: list[list[int]] = []
        self._short: dict[str, str] = {}
        for g in self.groups:
            missing = [a for a in g.attrs if a not in self.attr_names]
            if missing:
                raise ValueError(f"attribute group '{g.name}' names {missing}, which the model does not predict")
            if g.kind not in ("exclusive", "optional"):
                raise ValueError(f"attribute group '{g.name}' has kind {g.kind!r}; use exclusive or optional")
            self._group_idx.append(g.indices(self.attr_names))
            self._short.update(zip(g.attrs, _short_names(g.attrs)))
            grouped.update(g.attrs)
        self.ungrouped = [i for i, a in enumerate(self.attr_names) if a not in grouped]

    @classmethod
    def from_contract(cls, contract) -> "LabelDecoder":
        """The decoding a checkpoint's ``InferenceContract`` prescribes (thresholds, group arg-max)."""
        return cls(contract.attr_names, contract.groups, contract.thresholds or 0.5, contract.group_argmax)

    def decode(self, probs: np.ndarray) -> dict[str, str | list[str]]:
        """Group name -> chosen member (or "none"); display-pair attribute -> its display string;
        ``"present"`` -> the other ungrouped attributes above their threshold, most likely first."""
        p = np.asarray(probs, dtype=np.float64).reshape(-1)
        if p.size != len(self.attr_names):
            raise ValueError(f"got {p.size} probabilities for {len(self.attr_names)} attributes")
        out: dict[str, str | list[str]] = {}
        for g, idx in zip(self.groups, self._group_idx):
            best = int(np.argmax(p[idx]))
            on = (g.kind == "exclusive" and self.group_argmax) or predicted_positive(p[idx[best]], self.thresholds[idx[best]])
            out[g.name] = g.attrs[best] if on else NONE
        present = []
        for i in self.ungrouped:
            name = self.attr_names[i]
            if name in BINARY_DISPLAY:
                out[name] = BINARY_DISPLAY[name][0 if predicted_positive(p[i], self.thresholds[i]) else 1]
            elif predicted_positive(p[i], self.thresholds[i]):
                present.append(i)
        out["present"] = [self.attr_names[i] for i in sorted(present, key=lambda i: -p[i])]
        return out

    def text(self, labels: dict[str, str | list[str]]) -> list[str]:
        """Short strings for drawing: ``"male"``, ``"age: adult"``, ``"Backpack"`` (two-way attributes,
        then groups, then present attributes). Optional groups decoded as "none" are left out."""
        lines = []
        for i in self.ungrouped:  # two-way attributes (gender) first: always decided, most telling
            name = self.attr_names[i]
            if name in BINARY_DISPLAY and name in labels:
                lines.append(str(labels[name]))
        for g in self.groups:
            member = labels.get(g.name, NONE)
            if member != NONE:
                lines.append(f"{g.name}: {self._short.get(member, member)}")
        lines.extend(labels.get("present", []))
        return lines

    def __call__(self, probs: np.ndarray) -> tuple[dict[str, str | list[str]], list[str]]:
        labels = self.decode(probs)
        return labels, self.text(labels)
