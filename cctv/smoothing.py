"""Per-track averaging of attribute probabilities over time, so labels do not flicker."""
from __future__ import annotations

from collections import deque

import numpy as np


class EmaSmoother:
    """s <- alpha * p + (1 - alpha) * s; the first observation initialises s."""

    def __init__(self, alpha: float = 0.3):
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"TEST.EMA_ALPHA must be in (0, 1], got {alpha}")
        self.alpha = alpha
        self.state: np.ndarray | None = None

    def update(self, probs: np.ndarray) -> np.ndarray:
        p = np.asarray(probs, np.float64)
        self.state = p.copy() if self.state is None else self.alpha * p + (1.0 - self.alpha) * self.state
        return self.state

    @property
    def value(self) -> np.ndarray | None:
        return self.state


class WindowSmoother:
    """Mean of the last ``window`` observations."""

    def __init__(self, window: int = 15):
        if window < 1:
            raise ValueError(f"TEST.WINDOW must be >= 1, got {window}")
        self.buf: deque[np.ndarray] = deque(maxlen=window)

    def update(self, probs: np.ndarray) -> np.ndarray:
        self.buf.append(np.asarray(probs, np.float64))
        return self.value

    @property
    def value(self) -> np.ndarray | None:
        return np.mean(self.buf, axis=0) if self.buf else None


def make_smoother(kind: str, alpha: float = 0.3, window: int = 15) -> EmaSmoother | WindowSmoother:
    """TEST.SMOOTHING: ``ema`` (TEST.EMA_ALPHA) or ``window`` (TEST.WINDOW)."""
    if kind == "ema":
        return EmaSmoother(alpha)
    if kind == "window":
        return WindowSmoother(window)
    raise ValueError(f"TEST.SMOOTHING = {kind!r} is not one of ema, window")
