"""The exception types that mean 'the user's input is wrong' (printed as one line by run.py)."""
from __future__ import annotations

import sys

# module -> exception classes it defines. Only modules already imported are looked at: an exception
# can only come from a module that was loaded, so a config typo is reported without importing timm.
_SOURCES = {
    "configs.loader": ("ConfigError",),
    "dataset.base": ("DataError",),
    "models.pretrained": ("WeightsError",),
    "tools.checkpoint": ("CheckpointError",),
    "train_upar_2024": ("ExperimentExists",),
    "batch_engine": ("NonFiniteLoss",),
    "tools.video.pipeline": ("VideoError",),
    "tools.video.detectors": ("DetectorError",),
    "tools.export_onnx": ("ExportError",),
    "models.c2t.convert": ("ConversionError",),
}


def user_error_types() -> tuple[type[BaseException], ...]:
    """The user-error classes among the modules imported so far (plus MemoryError: CUDA OOM hints)."""
    found: list[type[BaseException]] = [MemoryError]
    for module, names in _SOURCES.items():
        mod = sys.modules.get(module)
        found.extend(getattr(mod, n) for n in names if mod is not None and hasattr(mod, n))
    return tuple(found)
