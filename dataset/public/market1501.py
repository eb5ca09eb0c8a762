"""Market-1501 (and DukeMTMC-reID) in the published layout, with the optional identity attributes.

  <ROOT>/bounding_box_train/  0002_c1s1_000451_03.jpg ...   (Duke: 0005_c2_f0046985.jpg)
  <ROOT>/bounding_box_test/   gallery; pid -1 = junk, 0000 = distractor
  <ROOT>/query/
File names are ``<pid>_c<camera>...``. ``DATASET.ATTR_FILE`` names the attribute file
(Market-1501_Attribute ``market_attribute.mat`` / DukeMTMC-attribute ``duke_attribute.mat``); ""
looks for it in ROOT, ROOT/attribute, ROOT/<Market-1501_Attribute | DukeMTMC-attribute> and beside
ROOT; "none", or none found with ``TASK: reid``, reads identities only (zero attributes).

Attributes are identity level, 1/2-coded (no / yes), in a struct with ``train`` and ``test`` parts
that list their fields in different orders: they are read by field name. Every image of an identity
gets its identity's labels; junk and distractors are UNKNOWN. Columns (Market-1501, 27 attributes):
9 binary ones named after their value 2 (female, long_hair, short_sleeve, short_lower, pants, hat,
backpack, bag, handbag), age as 4 one-hot columns, 8 upper and 9 lower colours, each colour set at
most one-of-N (78 / 751 train identities have no upper colour): optional groups in
``configs/market1501.yaml``. ``LABEL eval`` is the published protocol (12 attributes: colours as
multi-class): the optional groups become exclusive; ``protocol_accuracy`` scores it as the authors'
evaluate_market_attribute.m does. ``LABEL all`` keeps them optional.

Splits: ``trainval`` = every bounding_box_train image of a real identity; ``val`` = the images of a
seeded 10% of those identities (DATASET.SPLIT_SEED), ``train`` = the rest; ``val_query`` /
``val_gallery`` split ``val`` as Market-1501's query was drawn (one image per identity and camera; where
that takes every image, as in a folder with one image per identity and camera, the query is instead each
identity's images from one camera and the gallery its other cameras', which the log says);
``query`` / ``gallery`` = query/ and bounding_box_test/ (junk included: the metric ignores it);
``test`` = the gallery images of real identities (the 13,115 the attribute protocol scores).
``PARData.identities`` holds the pids as named (-1 junk = unknown, 0 distractor: no query has pid 0,
so the ReID metric counts distractors as negatives), ``PARData.cameras`` the camera ids.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from yacs.config import CfgNode as CN

from dataset.base import UNKNOWN, AttrGroup, DataError, PARData
from dataset.public._common import VAL_FRACTION, attach_groups, dataset_root, get_field, load_mat, require_dir
from dataset.registry import register_dataset

log = logging.getLogger(__name__)

FOLDERS = (("train", "bounding_box_train"), ("query", "query"), ("gallery", "bounding_box_test"))
NAME_RE = re.compile(r"^(-1|\d+)_c(\d+)")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class AttrSpec:
    """How one release's attribute file maps to label columns."""

    variable: str  # the struct in the .mat file
    file_name: str
    folder: str  # the release's folder name
    binary: tuple[tuple[str, str], ...]  # (field, column named after value 2)
    categorical: tuple[tuple[str, tuple[str, ...]], ...]  # (field, one column per value 1..n)
    colours: tuple[tuple[str, tuple[str, ...]], ...]  # (protocol name, the one-of-N fields = columns)

    def columns(self) -> list[str]:
        cols = [c for _, c in self.binary] + [c for _, cs in self.categorical for c in cs]
        return cols + [c for _, cs in self.colours for c in cs]

    def protocol(self) -> list[tuple[str, list[str]]]:
        """The published protocol: one entry per scored attribute, a list of >1 columns = multi-class."""
        return ([(f, [c]) for f, c in self.binary] + [(f, list(cs)) for f, cs in self.categorical]
                + [(g, list(cs)) for g, cs in self.colours])


MARKET = AttrSpec(
    "market_attribute", "market_attribute.mat", "Market-1501_Attribute",
    binary=(("gender", "female"), ("hair", "long_hair"), ("up", "short_sleeve"), ("down", "short_lower"),
            ("clothes", "pants"), ("hat", "hat"), ("backpack", "backpack"), ("bag", "bag"), ("handbag", "handbag")),
    categorical=(("age", ("age_young", "age_teenager", "age_adult", "age_old")),),
    colours=(("upcolour", ("upblack", "upwhite", "upred", "uppurple", "upyellow", "upgray", "upblue", "upgreen")),
             ("downcolour", ("downblack", "downwhite", "downpink", "downpurple", "downyellow", "downgray",
                             "downblue", "downgreen", "downbrown"))))
DUKE = AttrSpec(  # DukeMTMC-attribute's README; no Duke file was at hand to test against
    "duke_attribute", "duke_attribute.mat", "DukeMTMC-attribute",
    binary=(("gender", "female"), ("top", "long_top"), ("boots", "boots"), ("hat", "hat"),
            ("backpack", "backpack"), ("bag", "bag"), ("handbag", "handbag"), ("shoes", "light_shoes")),
    categorical=(),
    colours=(("upcolour", ("upblack", "upwhite", "upred", "uppurple", "upgray", "upblue", "upgreen", "upbrown")),
             ("downcolour", ("downblack", "downwhite", "downred", "downgray", "downblue", "downgreen",
                             "downbrown"))))


# ----------------------------------------------------------------------------- images
def scan_folder(folder: Path) -> tuple[list[Path], np.ndarray, np.ndarray]:
    """Sorted images of one folder with their pids and camera ids (from the file names)."""
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    pids, cams = np.empty(len(paths), np.int64), np.empty(len(paths), np.int64)
    for i, p in enumerate(paths):
        m = NAME_RE.match(p.name)
        if m is None:
            raise DataError(f"{p}: the name is not <pid>_c<camera>..., as Market-1501 / DukeMTMC-reID name "
                            "images; rename or remove the file")
        pids[i], cams[i] = int(m.group(1)), int(m.group(2))
    if not paths:
        raise DataError(f"{folder} holds no .jpg image; DATASET.ROOT must be the Market-1501 / DukeMTMC-reID "
                        "folder (with bounding_box_train/, bounding_box_test/, query/)")
    return paths, pids, cams


# ----------------------------------------------------------------------------- attributes
def find_attr_file(cfg: CN, root: Path, spec: AttrSpec) -> Path | None:
    """DATASET.ATTR_FILE resolved: a path (must exist), "none", or "" = the usual places."""
    choice = str(cfg.DATASET.get("ATTR_FILE", "")).strip()
    if choice.lower() == "none":
        return None
    if choice:
        path = Path(choice)
        if not path.is_file():
            raise DataError(f"DATASET.ATTR_FILE = {choice!r} is not a file; point it at {spec.file_name} "
                            "or set it to none (identities only)")
        return path
    places = [root, root / "attribute", root / spec.folder, root.parent / spec.folder]
    found = next((p / spec.file_name for p in places if (p / spec.file_name).is_file()), None)
    if found is None and str(cfg.get("TASK", "par")) != "reid":
        raise DataError(f"no {spec.file_name} in {', '.join(str(p) for p in places)}; set DATASET.ATTR_FILE to the "
                        "attribute file, or TASK reid (or DATASET.ATTR_FILE none) to train identities only")
    return found


def _codes(part: dict, field: str, n_values: int, file: Path, where: str) -> np.ndarray:
    values = np.asarray(get_field(part, [field], file, where)).reshape(-1)
    if values.dtype.kind not in "biuf" or not np.isin(values, np.arange(1, n_values + 1)).all():
        bad = values[~np.isin(values, np.arange(1, n_values + 1))] if values.dtype.kind in "biuf" else values[:1]
        shown = bad[0].item() if isinstance(bad[0], np.generic) else bad[0]
        raise DataError(f"{file}: {where}.{field} holds {shown!r}; its values must be 1..{n_values} "
                        "(1 = no, 2 = yes for yes/no attributes)")
    return values.astype(np.int64)


def _part_table(part, file: Path, where: str, spec: AttrSpec) -> dict[int, np.ndarray]:
    """pid -> label row of one part (train / test), fields read by name."""
    ids = get_field(part, ["image_index"], file, where)
    try:
        pids = [int(str(x).strip()) for x in np.asarray(ids, dtype=object).reshape(-1)]
    except ValueError:
        raise DataError(f"{file}: {where}.image_index must hold identity numbers such as '0002'") from None
    cols = []
    for field, _ in spec.binary:
        cols.append((_codes(part, field, 2, file, where) == 2)[:, None])
    for field, names in spec.categorical:
        cols.append(np.eye(len(names), dtype=bool)[_codes(part, field, len(names), file, where) - 1])
    for _, fields in spec.colours:
        cols.append(np.stack([_codes(part, f, 2, file, where) == 2 for f in fields], 1))
    table = np.concatenate(cols, 1).astype(np.float32)
    if len(table) != len(pids):
        raise DataError(f"{file}: {where} lists {len(pids)} identities but {len(table)} attribute values")
    return dict(zip(pids, table))


def read_attr_table(file: Path, spec: AttrSpec) -> dict[int, np.ndarray]:
    """pid -> (A,) 0/1 labels over ``spec.columns()``, from both parts of the file."""
    mat = load_mat(file)
    if spec.variable not in mat:
        have = ", ".join(k for k in mat if not k.startswith("__")) or "nothing"
        raise DataError(f"{file}: variable '{spec.variable}' is missing (has {have}); "
                        f"point DATASET.ATTR_FILE at the release's {spec.file_name}")
    table: dict[int, np.ndarray] = {}
    for part in ("train", "test"):
        rows = _part_table(get_field(mat[spec.variable], [part], file, spec.variable), file,
                           f"{spec.variable}.{part}", spec)
        clash = [p for p in rows if p in table and not np.array_equal(rows[p], table[p])]
        if clash:
            raise DataError(f"{file}: identity {clash[0]} is in both train and test with different attributes")
        table.update(rows)
    return table


def image_labels(pids: np.ndarray, paths: list[Path], table: dict[int, np.ndarray], n_cols: int,
                 file: Path) -> np.ndarray:
    """(N, A) labels of the images; junk / distractors UNKNOWN, an unannotated identity an error."""
    labels = np.full((len(pids), n_cols), UNKNOWN, np.float32)
    for i, pid in enumerate(pids):
        if pid <= 0:
            continue
        row = table.get(int(pid))
        if row is None:
            raise DataError(f"{paths[i]}: identity {pid} has no entry in {file}; the attribute file does not "
                            "belong to these images (fix DATASET.ATTR_FILE, or set it to none)")
        labels[i] = row
    return labels


# ----------------------------------------------------------------------------- splits
def market_query(val: np.ndarray, pids: np.ndarray, cams: np.ndarray,
                 rng: np.random.Generator) -> np.ndarray:
    """Market-1501's query draw: one image per identity and camera (the rest is the gallery)."""
    keys = pids[val] * 10_000 + cams[val]
    shuffled = rng.permutation(len(val))
    _, first = np.unique(keys[shuffled], return_index=True)
    return np.sort(val[shuffled[first]])


def camera_query(val: np.ndarray, pids: np.ndarray, cams: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per identity seen by two or more cameras: its images from one (seeded) camera; its other cameras'
    images stay in the gallery (VIPeR / PRID / GRID-style folders: one image per identity and camera)."""
    query = []
    for pid in np.unique(pids[val]):
        mine = val[pids[val] == pid]
        views = np.unique(cams[mine])
        if len(views) >= 2:
            query.append(mine[cams[mine] == rng.choice(views)])
    return np.sort(np.concatenate(query)) if query else np.zeros(0, np.int64)


def split_rows(pids: np.ndarray, cams: np.ndarray, part: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """The splits of the module note; ``part`` is 0 / 1 / 2 = train / query / gallery folder per image."""
    rng = np.random.default_rng(seed)
    trainval = np.flatnonzero((part == 0) & (pids > 0))
    ids = np.unique(pids[trainval])
    n_val = int(round(VAL_FRACTION * len(ids)))
    n_val = max(n_val, 1) if len(ids) >= 2 else 0  # a tiny folder still gets a validation identity
    val_ids = rng.permutation(ids)[:n_val]
    in_val = np.isin(pids[trainval], val_ids)
    val = trainval[in_val]
    val_query = market_query(val, pids, cams, rng)
    if len(val) and len(val_query) == len(val):  # every image its identity's only one in its camera
        val_query = camera_query(val, pids, cams, rng)
        log.warning("val_query / val_gallery: one image per identity and camera leaves Market-1501's query draw "
                    "(one image per identity and camera) no gallery; cut instead per identity: query = its images "
                    "from one camera (%d images), gallery = its other cameras' (%d images)", len(val_query),
                    len(val) - len(val_query))
    return {"train": trainval[~in_val], "val": val, "trainval": trainval,
            "val_query": val_query, "val_gallery": np.setdiff1d(val, val_query),
            "query": np.flatnonzero(part == 1), "gallery": np.flatnonzero(part == 2),
            "test": np.flatnonzero((part == 2) & (pids > 0))}


def protocol_groups(cfg: CN, attrs: list[str], file: Path) -> list[AttrGroup]:
    """DATASET.GROUPS on the columns; ``LABEL eval`` (the published protocol) scores every group as
    one multi-class attribute, so optional groups become exclusive."""
    groups = attach_groups(cfg, attrs, attrs, file)
    if str(cfg.DATASET.LABEL) == "eval":
        groups = [AttrGroup(g.name, "exclusive", g.attrs) for g in groups]
    return groups


def read_reid_folder(cfg: CN, name: str, spec: AttrSpec) -> PARData:
    root = dataset_root(cfg)
    paths, pids, cams, part = [], [], [], []
    for k, (_, folder) in enumerate(FOLDERS):
        p, i, c = scan_folder(require_dir(root / folder, f"{name} {folder} folder"))
        paths += p
        pids.append(i)
        cams.append(c)
        part.append(np.full(len(p), k))
    pids, cams, part = np.concatenate(pids), np.concatenate(cams), np.concatenate(part)
    if not ((part == 0) & (pids > 0)).any():
        raise DataError(f"{root / FOLDERS[0][1]} holds no image of a real identity (pid > 0)")
    splits = split_rows(pids, cams, part, int(cfg.DATASET.SPLIT_SEED))
    file = find_attr_file(cfg, root, spec)
    if file is None:
        log.info("%s: no attribute file, identities only", name)
        labels, attrs, groups = np.zeros((len(paths), 0), np.float32), [], []
    else:
        attrs = spec.columns()
        labels = image_labels(pids, paths, read_attr_table(file, spec), len(attrs), file)
        groups = protocol_groups(cfg, attrs, file)
    data = PARData(name, paths, labels, attrs, splits, groups, root, identities=pids, cameras=cams)
    log.info("%s: %d train (%d ids) / %d query / %d gallery images, %d attributes", name, len(splits["trainval"]),
             len(np.unique(pids[splits["trainval"]])), len(splits["query"]), len(splits["gallery"]), len(attrs))
    return data.select_attrs(list(cfg.DATASET.ATTRS)) if cfg.DATASET.ATTRS else data


@register_dataset("MARKET1501")
def read_market1501(cfg: CN) -> PARData:
    return read_reid_folder(cfg, "MARKET1501", MARKET)


@register_dataset("DUKEMTMC")
def read_dukemtmc(cfg: CN) -> PARData:
    return read_reid_folder(cfg, "DUKEMTMC", DUKE)


# ----------------------------------------------------------------------------- published protocol
def protocol_accuracy(scores: np.ndarray, labels: np.ndarray, attr_names: list[str], spec: AttrSpec = MARKET,
                      threshold: float = 0.5) -> dict[str, float]:
    """Per-attribute accuracy of the published protocol (Lin et al.'s evaluate_market_attribute.m)
    on images with known labels: a binary attribute is right when ``score > threshold`` equals the
    label; a multi-class one (age, colours) when the label is 1 at the arg-max column, so an
    identity with no colour annotated is always wrong, as in the authors' script. ``mean`` averages them."""
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels)
    if (labels < 0).any():
        raise ValueError("protocol_accuracy needs known labels only (use the 'test' split, not junk / distractors)")
    out = {}
    for attr, cols in spec.protocol():
        missing = [c for c in cols if c not in attr_names]
        if missing:
            raise ValueError(f"the protocol attribute {attr!r} needs columns {missing}, not in attr_names")
        idx = [attr_names.index(c) for c in cols]
        if len(idx) == 1:
            right = (scores[:, idx[0]] > threshold) == (labels[:, idx[0]] > 0.5)
        else:
            pick = np.asarray(idx)[scores[:, idx].argmax(1)]
            right = labels[np.arange(len(labels)), pick] > 0.5
        out[attr] = float(right.mean()) if len(right) else 0.0
    out["mean"] = float(np.mean([out[a] for a, _ in spec.protocol()]))
    return out
