"""The in-memory description every dataset reader returns, whatever its on-disk format."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from configs.errors import UserError

UNKNOWN = -1  # label value for "not annotated": masked out of losses and metrics


class DataError(UserError, ValueError):
    """A data-file mistake; the message names the file, row/field and the fix."""


@dataclass(frozen=True)
class AttrGroup:
    """Attributes that describe one property. ``exclusive``: exactly one is on (softmax-able);
    ``optional``: at most one is on (e.g. glasses / sunglasses / neither)."""

    name: str
    kind: str
    attrs: tuple[str, ...]

    def indices(self, attr_names: list[str]) -> list[int]:
        return [attr_names.index(a) for a in self.attrs]


@dataclass
class PARData:
    """Images, labels and splits of one dataset.

    ``labels`` is (N, A) float32 with 1 = present, 0 = absent, UNKNOWN (-1) = not annotated.
    ``splits`` maps a split name (train / val / test / trainval ...) to row indices.
    ``identities`` / ``cameras`` (optional, aligned with ``image_paths``): int person identity and
    camera / view codes per image, -1 = unknown; equal codes = same person / camera (for ReID).
    ``strata`` (optional): name -> (N,) per-image level (e.g. NATIVE's ``quality``: high / normal /
    low); evaluation also reports the metrics of every level.
    """

    name: str
    image_paths: list[Path]
    labels: np.ndarray
    attr_names: list[str]
    splits: dict[str, np.ndarray]
    groups: list[AttrGroup] = field(default_factory=list)
    image_root: Path | None = None  # images must resolve inside it (path-traversal guard)
    identities: np.ndarray | None = None  # (N,) int64 person identity per image, -1 = unknown
    cameras: np.ndarray | None = None  # (N,) int64 camera / view per image, -1 = unknown
    strata: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (N,) level per image
    eval_attrs: list[str] = field(default_factory=list)  # the release's evaluated subset (METRIC.EVAL_ATTRS published)

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.float32)
        n, a = self.labels.shape
        if len(self.image_paths) != n:
            raise DataError(f"{self.name}: {len(self.image_paths)} images but {n} label rows")
        if len(self.attr_names) != a:
            raise DataError(f"{self.name}: {len(self.attr_names)} attribute names but {a} label columns")
        for split, idx in self.splits.items():
            idx = np.asarray(idx, dtype=np.int64)
            if idx.size and (idx.min() < 0 or idx.max() >= n):
                raise DataError(f"{self.name}: split '{split}' holds index {int(idx.max())} outside 0..{n - 1}")
            self.splits[split] = idx
        for key in ("identities", "cameras"):
            codes = getattr(self, key)
            if codes is not None:
                codes = np.asarray(codes, dtype=np.int64)
                if codes.shape != (n,):
                    raise DataError(f"{self.name}: {key} has shape {codes.shape}, expected ({n},) (one per image)")
                setattr(self, key, codes)
        for key, levels in self.strata.items():
            self.strata[key] = np.asarray(levels).astype(str)
            if self.strata[key].shape != (n,):
                raise DataError(f"{self.name}: stratum {key} has shape {self.strata[key].shape}, expected ({n},)")
        for g in self.groups:
            missing = [x for x in g.attrs if x not in self.attr_names]
            if missing:
                raise DataError(f"{self.name}: group '{g.name}' names unknown attribute(s) {missing}; fix DATASET.GROUPS "
                                f"(attributes: {', '.join(self.attr_names)})")

    def split_labels(self, split: str) -> np.ndarray:
        return self.labels[self.splits[split]]

    def label_priors(self, split: str = "train") -> np.ndarray:
        """Positive rate per attribute on ``split`` (unknown labels ignored). Used for loss weighting."""
        y = self.split_labels(split)
        known = y >= 0
        pos = ((y == 1) & known).sum(0)
        return (pos / np.maximum(known.sum(0), 1)).astype(np.float32)

    def select_attrs(self, names: list[str]) -> "PARData":
        """Keep only ``names`` (in that order); groups are trimmed to what remains."""
        missing = [n for n in names if n not in self.attr_names]
        if missing:
            raise DataError(
                f"{self.name}: attribute(s) {missing} not in the dataset; available: {', '.join(self.attr_names)}"
            )
        cols = [self.attr_names.index(n) for n in names]
        groups = [
            AttrGroup(g.name, g.kind, tuple(a for a in g.attrs if a in names))
            for g in self.groups
            if sum(a in names for a in g.attrs) >= 2
        ]
        return dataclasses.replace(self, labels=self.labels[:, cols], attr_names=list(names),
                                   splits=dict(self.splits), groups=groups, strata=dict(self.strata),
                                   eval_attrs=[a for a in self.eval_attrs if a in names])


def groups_from_cfg(entries: list) -> list[AttrGroup]:
    """``DATASET.GROUPS`` entries ([name, kind, attr...]) as AttrGroup objects."""
    return [AttrGroup(str(e[0]), str(e[1]), tuple(str(a) for a in e[2:])) for e in entries]
