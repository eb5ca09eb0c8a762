"""Rethinking_of_PAR's ``dataset_all.pkl`` (also used by C2T-Net), read without arbitrary unpickling.

The file is an EasyDict with ``image_name`` (N), ``label`` (N, A), ``attr_name`` (A),
``label_idx.eval`` (evaluated columns), ``partition.{train,val,test,trainval}`` (an index array, or a
list of them for PETA / RAP's 5 random partitions: ``DATASET.SPLIT_ID`` picks one), ``root`` (image
folder on the machine that wrote it) and ``weight_*`` (ignored: priors come from the labels).

``DATASET.ROOT`` is the folder holding ``dataset_all.pkl`` (or the .pkl file itself). Images are taken
from the folder next to it named like the last part of ``root`` (e.g. ``data/PETA/images``), else from
``root`` itself. Label 2 (RAP's "uncertain") follows ``DATASET.UNCERTAIN_LABEL``.
"""
from __future__ import annotations

import io
import pickle
from collections import OrderedDict
from pathlib import Path, PureWindowsPath
from typing import Any

import numpy as np
from yacs.config import CfgNode as CN

from dataset.base import DataError, PARData
from dataset.public._common import (build_pardata, carve_val, index_vector, label_matrix, label_set, split_choice,
                                    str_list, uncertain_value)
from dataset.registry import register_dataset

PKL_FILE = "dataset_all.pkl"


class _AttrDict(dict):
    """Stand-in for EasyDict while unpickling: items arrive via SETITEMS, attributes via BUILD."""

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, dict):
            for k, v in state.items():
                self.setdefault(k, v)


def _numpy_global(submodule: str, name: str):
    import importlib

    try:
        mod = importlib.import_module(f"numpy._core.{submodule}")  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        mod = importlib.import_module(f"numpy.core.{submodule}")
    return getattr(mod, name)


# (module, name) -> object; everything else is refused, so no foreign code ever runs. numpy arrays need
# _reconstruct / _frombuffer (protocol 5) + ndarray + dtype, numpy scalars need scalar, protocols 0-2
# write bytes via _codecs.encode, and EasyDict is replaced by a plain dict subclass.
_ALLOWED = {
    ("easydict", "EasyDict"): _AttrDict,
    ("builtins", "dict"): dict,
    ("builtins", "list"): list,
    ("builtins", "tuple"): tuple,
    ("builtins", "range"): range,
    ("builtins", "xrange"): range,
    ("builtins", "slice"): slice,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("collections", "OrderedDict"): OrderedDict,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}
_NUMPY_FUNCS = {("multiarray", "_reconstruct"), ("multiarray", "scalar"), ("numeric", "_frombuffer")}
_PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle names a class or function outside the allow-list."""


class SafeUnpickler(pickle.Unpickler):
    """Admits only dict / list / tuple / str / numbers, numpy arrays and dtypes, range, and EasyDict (as dict)."""

    def find_class(self, module: str, name: str):
        module = _PY2_MODULES.get(module, module)
        if module.startswith(("numpy.core.", "numpy._core.")) and (module.rsplit(".", 1)[1], name) in _NUMPY_FUNCS:
            return _numpy_global(module.rsplit(".", 1)[1], name)
        if (module, name) == ("_codecs", "encode"):
            import codecs

            return codecs.encode
        if (module, name) == ("copyreg", "_reconstructor"):  # protocol 0/1 dict subclasses
            import copyreg

            return copyreg._reconstructor  # it can only build classes this method admits
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        raise RefusedGlobal(f"refused global '{module}.{name}'")


def _plain(obj: Any) -> Any:
    """EasyDict stand-ins and OrderedDicts as plain dicts, recursively."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain(v) for v in obj)
    return obj


def safe_load_pickle(path: Path) -> Any:
    try:
        data = path.read_bytes()
        return _plain(SafeUnpickler(io.BytesIO(data), encoding="latin1").load())
    except RefusedGlobal as e:
        raise DataError(f"{path}: {e}; only dict/list/tuple, numpy arrays and EasyDict are accepted "
                        "(is this a Rethinking_of_PAR dataset_all.pkl?)") from None
    except Exception as e:  # truncated or foreign files fail in many ways
        raise DataError(f"{path} is not a readable pickle ({type(e).__name__}: {e})") from None


def _get(d: Any, key: str, file: Path) -> Any:
    node = d
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            have = ", ".join(map(str, node)) if isinstance(node, dict) else type(node).__name__
            raise DataError(f"{file}: field '{key}' is missing (has {have})")
        node = node[part]
    return node


def _image_dir(file: Path, stored_root: Any) -> Path:
    stored = str(stored_root) if isinstance(stored_root, (str, Path)) else ""
    leaf = PureWindowsPath(stored).name if "\\" in stored else Path(stored).name
    candidates = ([file.parent / leaf] if leaf else []) + ([Path(stored)] if stored else [])
    for c in candidates:
        if c.is_dir():
            return c
    tried = " or ".join(str(c) for c in candidates) or "(the file stores no 'root')"
    raise DataError(f"{file}: image folder not found; tried {tried}. Put the images next to the .pkl "
                    f"(e.g. {file.parent / (leaf or 'images')})")


def _split_indices(partition: dict, cfg: CN, file: Path, n: int) -> dict[str, np.ndarray]:
    splits = {}
    for name, value in partition.items():
        if isinstance(value, (list, tuple)) and value and not np.isscalar(value[0]):  # several random partitions
            value = split_choice(list(value), cfg, file, f"partition.{name}")
        splits[str(name)] = index_vector(value, file, f"partition.{name}", n, one_based=False)
    if "trainval" not in splits and {"train", "val"} <= splits.keys():
        splits["trainval"] = np.concatenate([splits["train"], splits["val"]])
    if "train" not in splits and "trainval" in splits:  # RAPv1: trainval / test only
        splits["train"], splits["val"] = carve_val(splits["trainval"], int(cfg.DATASET.SPLIT_SEED))
    return splits


@register_dataset("PKL")
def read_pkl(cfg: CN) -> PARData:
    label_set(cfg)
    uncertain_value(cfg)
    root = Path(str(cfg.DATASET.ROOT).strip() or ".")
    file = root if root.suffix == ".pkl" else root / PKL_FILE
    if not str(cfg.DATASET.ROOT).strip() or not file.is_file():
        raise DataError(f"dataset pickle not found: {file} (set DATASET.ROOT to the folder holding {PKL_FILE} "
                        "or to the .pkl file)")
    d = safe_load_pickle(file)
    if not isinstance(d, dict):
        raise DataError(f"{file}: expected an EasyDict/dict at the top level, got {type(d).__name__}")
    names = str_list(_get(d, "image_name", file), file, "image_name")
    attrs = str_list(_get(d, "attr_name", file), file, "attr_name")
    labels = label_matrix(_get(d, "label", file), file, "label", rows=len(names), cols=len(attrs),
                          allowed=(0, 1, 2))
    labels[labels == 2] = uncertain_value(cfg)
    partition = _get(d, "partition", file)
    if not isinstance(partition, dict) or not partition:
        raise DataError(f"{file}: field 'partition' should map split names to index arrays")
    splits = _split_indices(partition, cfg, file, len(names))
    eval_idx = None
    label_idx = d.get("label_idx")
    if isinstance(label_idx, dict) and "eval" in label_idx:
        eval_idx = index_vector(list(label_idx["eval"]), file, "label_idx.eval", len(attrs), one_based=False).tolist()
    image_dir = _image_dir(file, d.get("root"))
    return build_pardata(cfg, str(d.get("description", "PKL")).upper() or "PKL", file, image_dir, names, labels,
                         attrs, eval_idx, splits, field="image_name")
