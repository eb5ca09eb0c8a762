"""Video inference: detector -> ByteTrack -> PAR on crops -> smoothed labels -> annotated outputs.

The names below are imported on first use (PEP 562): ``cctv.search`` and ``cctv.index`` start without
torch or OpenCV's detectors."""
from __future__ import annotations

import importlib
from typing import Any

_WHERE = {"Detections": "detectors", "DetectorError": "detectors", "build_detector": "detectors",
          "VideoError": "pipeline", "VideoOptions": "pipeline", "list_videos": "pipeline",
          "process_video": "pipeline"}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'cctv' has no attribute {name!r}")
    return getattr(importlib.import_module(f"cctv.{_WHERE[name]}"), name)
