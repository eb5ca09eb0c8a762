"""Datasets: readers register by name and return a PARData; loaders turn it into batches."""
import dataset.native  # noqa: F401  (registers NATIVE)
import dataset.synthetic  # noqa: F401  (registers SYNTH)

try:  # the public dataset readers (PETA, PA100k, RAP, UPAR, pkl)
    import dataset.public  # noqa: F401
except ImportError:  # pragma: no cover - only while the package is absent
    pass

from dataset.base import UNKNOWN, AttrGroup, DataError, PARData  # noqa: E402
from dataset.build import build_data, build_loaders, used_splits  # noqa: E402

__all__ = ["UNKNOWN", "AttrGroup", "DataError", "PARData", "build_data", "build_loaders", "used_splits"]
