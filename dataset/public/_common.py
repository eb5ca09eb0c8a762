"""Helpers shared by the public dataset readers: file checks, .mat access, label sets, groups.

Every failure is a ``DataError`` naming the file and the field (or config key) at fault.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import numpy as np
from yacs.config import CfgNode as CN

from dataset.base import UNKNOWN, AttrGroup, DataError, PARData, groups_from_cfg

LABEL_SETS = ("eval", "all")
UNCERTAIN_CHOICES = ("negative", "unknown")  # what RAP's label value 2 becomes (see uncertain_value)
VAL_FRACTION = 0.1  # share of trainval carved out as val where a format publishes only trainval/test


# ----------------------------------------------------------------------------- files
def dataset_root(cfg: CN) -> Path:
    """``DATASET.ROOT`` as an existing folder (label-set keys are checked first: config mistakes
    surface before any file is read)."""
    label_set(cfg)
    uncertain_value(cfg)
    root = str(cfg.DATASET.ROOT).strip()
    if not root:
        raise DataError(f"DATASET.ROOT is empty; point it at the {cfg.DATASET.NAME} folder "
                        "(see dataset/public/README.md)")
    path = Path(root)
    if not path.is_dir():
        raise DataError(f"DATASET.ROOT = {root!r} is not a folder; put the {cfg.DATASET.NAME} files there "
                        "(see dataset/public/README.md)")
    return path


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise DataError(f"{what} not found: {path} (see dataset/public/README.md for the expected layout)")
    return path


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DataError(f"{what} not found: {path} (see dataset/public/README.md for the expected layout)")
    return path


def join_images(root: Path, names: list[str], file: Path, field: str) -> list[Path]:
    """``root / name`` for names read from a label file; absolute names and '..' are refused (a lexical
    check, cheap for 100k names; the loader's image_root guard still applies)."""
    prefix = str(root).rstrip("/\\")
    out = []
    for name in names:
        rel = name.replace("\\", "/")
        if not rel or rel.startswith("/") or rel[1:2] == ":" or ".." in rel.split("/"):
            raise DataError(f"{file}: {field} holds the image name {name!r}, which leaves the image folder; "
                            "names must be relative paths without '..'")
        out.append(Path(f"{prefix}/{rel}"))
    return out


# ----------------------------------------------------------------------------- .mat access
def load_mat(path: Path) -> dict[str, Any]:
    """A MATLAB v5 file as nested dicts / lists / arrays (scipy's ``simplify_cells``)."""
    from scipy.io import loadmat

    try:
        return loadmat(str(path), simplify_cells=True)
    except NotImplementedError:  # scipy's answer to HDF5-based v7.3 files
        raise DataError(f"{path} is a MATLAB v7.3 file; re-save it as v7 (save(..., '-v7')) or use the original "
                        "release") from None
    except Exception as e:  # scipy raises ValueError / TypeError / OSError variants for damaged files
        raise DataError(f"{path} is not a readable MATLAB .mat file ({type(e).__name__}: {e})") from None


def get_field(node: Any, names: Iterable[str], file: Path, where: str) -> Any:
    """The first of ``names`` present in the struct ``node`` (aliases cover release variants)."""
    names = list(names)
    if not isinstance(node, dict):
        raise DataError(f"{file}: '{where}' should be a struct with field '{names[0]}', got {type(node).__name__}")
    for n in names:
        if n in node:
            return node[n]
    have = ", ".join(k for k in node if not k.startswith("__")) or "nothing"
    raise DataError(f"{file}: field '{where}.{names[0]}' is missing (has {have})")


def pick_by_prefix(node: Any, prefix: str, position: int, file: Path, where: str) -> Any:
    """Struct field whose name starts with ``prefix`` (train / val / test); the field at ``position``
    when no name matches (published loaders index these structs by position)."""
    if not isinstance(node, dict):
        raise DataError(f"{file}: '{where}' should be a struct of index vectors, got {type(node).__name__}")
    for k, v in node.items():
        if k.lower().startswith(prefix):
            return v
    fields = [k for k in node if not k.startswith("__")]
    if position < len(fields):
        return node[fields[position]]
    raise DataError(f"{file}: '{where}' has no '{prefix}' field (has {', '.join(fields) or 'nothing'})")


def as_list(x: Any) -> list:
    """A cell array / vector read with squeeze_me as a Python list (a single element is squeezed to a scalar)."""
    if isinstance(x, list):
        return x
    if isinstance(x, np.ndarray):
        return list(x.ravel()) if x.ndim else [x.item()]
    return [x]


def str_list(x: Any, file: Path, field: str, count: int | None = None) -> list[str]:
    """A cell array of strings (each maybe wrapped in a 1-element cell) as list[str]."""
    out = []
    for i, v in enumerate(as_list(x)):
        while isinstance(v, (list, np.ndarray)) and np.size(v) == 1:  # {'name'} nested once more
            v = v[0] if isinstance(v, list) else v.reshape(-1)[0]
        if not isinstance(v, str):
            raise DataError(f"{file}: {field}[{i}] should be a string, got {type(v).__name__}")
        out.append(v.strip())
    if count is not None and len(out) != count:
        raise DataError(f"{file}: {field} holds {len(out)} names, expected {count}")
    return out


def label_matrix(x: Any, file: Path, field: str, rows: int | None = None, cols: int | None = None,
                 allowed: tuple[int, ...] = (0, 1)) -> np.ndarray:
    """A 2-D numeric label matrix, shape and values checked; returned as float32."""
    arr = np.asarray(x)
    if arr.ndim == 1 and arr.size and (rows == 1 or cols == 1):
        arr = arr.reshape(-1, 1) if cols == 1 else arr.reshape(1, -1)
    if arr.ndim != 2 or arr.dtype.kind not in "biuf":
        raise DataError(f"{file}: {field} should be a 2-D numeric matrix, got shape {arr.shape} ({arr.dtype})")
    if rows is not None and arr.shape[0] != rows or cols is not None and arr.shape[1] != cols:
        want = f"({rows if rows is not None else 'N'}, {cols if cols is not None else 'A'})"
        raise DataError(f"{file}: {field} has shape {arr.shape}, expected {want}")
    arr = arr.astype(np.float32)
    bad = ~np.isin(arr, np.asarray(allowed, np.float32))
    if bad.any():
        r, c = map(int, np.argwhere(bad)[0])
        raise DataError(f"{file}: {field} holds {arr[r, c]:g} at row {r + 1}, column {c + 1}; "
                        f"allowed values are {', '.join(map(str, allowed))}")
    return arr


def index_vector(x: Any, file: Path, field: str, n: int, one_based: bool = True) -> np.ndarray:
    """A vector of row indices (MATLAB 1-based by default) as 0-based int64, range-checked against ``n``."""
    arr = np.atleast_1d(np.asarray(x)).ravel()
    if arr.size and arr.dtype.kind not in "biuf":
        raise DataError(f"{file}: {field} should hold integer indices, got {arr.dtype}")
    if arr.size and arr.dtype.kind == "f" and not np.all(arr == np.round(arr)):
        raise DataError(f"{file}: {field} holds non-integer indices")
    idx = arr.astype(np.int64) - (1 if one_based else 0)
    lo, hi = (1, n) if one_based else (0, n - 1)
    bad = (idx < 0) | (idx >= n)
    if bad.any():
        v = int(arr[np.argmax(bad)])
        raise DataError(f"{file}: {field} holds index {v} outside {lo}..{hi} (the file has {n} images)")
    return idx


def split_choice(parts: list, cfg: CN, file: Path, field: str) -> Any:
    """Partition ``DATASET.SPLIT_ID`` of a list of random partitions."""
    k = int(cfg.DATASET.SPLIT_ID)
    if not 0 <= k < len(parts):
        raise DataError(f"DATASET.SPLIT_ID = {k} but {file} holds {len(parts)} partition(s) in {field}; "
                        f"use 0..{len(parts) - 1}")
    return parts[k]


def carve_val(trainval: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded ``VAL_FRACTION`` of trainval as val, the rest as train (both sorted)."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(trainval)
    n_val = int(round(VAL_FRACTION * len(trainval)))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


# ----------------------------------------------------------------------------- labels
def uncertain_value(cfg: CN) -> float:
    """RAP marks some labels 2 (uncertain). Rethinking_of_PAR / C2T-Net set them to 0 before training
    and scoring (``negative``, the default, so published numbers compare); the RAP authors' own
    baselines ignore them (``unknown``: -1, masked from loss and metrics)."""
    choice = str(cfg.DATASET.get("UNCERTAIN_LABEL", "negative"))
    if choice not in UNCERTAIN_CHOICES:
        raise DataError(f"DATASET.UNCERTAIN_LABEL = {choice!r}; use one of {', '.join(UNCERTAIN_CHOICES)}")
    return 0.0 if choice == "negative" else float(UNKNOWN)


def label_set(cfg: CN) -> str:
    choice = str(cfg.DATASET.LABEL)
    if choice not in LABEL_SETS:
        raise DataError(f"DATASET.LABEL = {choice!r}; use 'eval' (the published evaluated attributes) or 'all'")
    return choice


def attach_groups(cfg: CN, all_attrs: list[str], kept: list[str], file: Path) -> list[AttrGroup]:
    """``DATASET.GROUPS`` (the one source of truth for the public datasets' groups) fitted to the kept
    attributes: a name the file lacks is an error (a typo); a name the label set dropped is trimmed,
    an exclusive group that lost a member becomes optional, and a group with < 2 members left goes."""
    groups = []
    for g in groups_from_cfg(cfg.DATASET.GROUPS):
        unknown = [a for a in g.attrs if a not in all_attrs]
        if unknown:
            raise DataError(f"DATASET.GROUPS group '{g.name}' names {unknown}, which {file.name} does not have; "
                            "fix the group or set DATASET.GROUPS: []")
        attrs = tuple(a for a in g.attrs if a in kept)
        if len(attrs) < 2:
            continue
        kind = g.kind if len(attrs) == len(g.attrs) else "optional"
        groups.append(AttrGroup(g.name, kind, attrs))
    return groups


def build_pardata(cfg: CN, name: str, file: Path, image_dir: Path, image_names: list[str],
                  labels: np.ndarray, attr_names: list[str], eval_idx: list[int] | None,
                  splits: dict[str, np.ndarray], field: str = "image names") -> PARData:
    """Choose the label set (DATASET.LABEL), join image paths, attach groups, build the PARData."""
    if len(set(attr_names)) != len(attr_names):
        dup = sorted({a for a in attr_names if attr_names.count(a) > 1})
        raise DataError(f"{file}: attribute name(s) {dup} appear more than once")
    if label_set(cfg) == "eval":
        if eval_idx is None:
            raise DataError(f"{file} defines no evaluated attribute subset; set DATASET.LABEL: all")
        cols = list(eval_idx)
        labels, kept = labels[:, cols], [attr_names[i] for i in cols]
    else:
        kept = list(attr_names)
    paths = join_images(image_dir, image_names, file, field)
    groups = attach_groups(cfg, attr_names, kept, file)
    published = [attr_names[i] for i in eval_idx] if eval_idx is not None else []
    return PARData(name, paths, labels, kept, splits, groups, image_dir, eval_attrs=published)
