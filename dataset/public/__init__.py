"""Readers of the public PAR datasets in their published layouts; importing registers them
(PETA, PA100K, RAPV1, RAPV2, PKL, UPAR, MARKET1501, DUKEMTMC). ``merge_datasets`` joins several for mixed training."""
from dataset.public import market1501, pa100k, peta, pkl, rap, upar  # noqa: F401  (registration side effects)
from dataset.public.mixed import merge_datasets

__all__ = ["merge_datasets"]
