"""What every detector returns, and the detector error type (a module of its own: the detectors
and their registry both use them)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from configs.errors import UserError


class DetectorError(UserError, ValueError):
    """A detector that cannot be built or fed; the message names the config key and the fix."""


@dataclass
class Detections:
    """``xyxy`` (N, 4) float32 pixel corners, ``scores`` (N,) float32 in [0, 1]."""

    xyxy: np.ndarray
    scores: np.ndarray

    @classmethod
    def empty(cls) -> "Detections":
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32))

    def __len__(self) -> int:
        return len(self.scores)
