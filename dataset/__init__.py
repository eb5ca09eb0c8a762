"""Datasets: readers register by name and return a PARData; loaders turn it into batches."""
import dataset.native  # noqa: F401  (registers NATIVE)
import dataset.synthetic  # noqa: F401  (registers SYNTH)

import dataset.public  # noqa: F401  (registers PETA, PA100K, RAPV1, RAPV2, PKL, UPAR)

from dataset.base import UNKNOWN, AttrGroup, DataError, PARData  # noqa: E402
from dataset.build import build_data, build_loaders, used_splits  # noqa: E402

__all__ = ["UNKNOWN", "AttrGroup", "DataError", "PARData", "build_data", "build_loaders", "used_splits"]
