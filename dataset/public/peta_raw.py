"""PETA in its original release: ``PETA dataset/<subset>/archive/`` with the images and ``Label.txt``.

``Label.txt`` lines are ``<ID> <attr> <attr> ...``, naming the attributes present (colours expanded,
``upperBodyBlue``). In most subsets a line is one person and the ID is the prefix of that person's
image names (``0053`` -> ``0053_001.jpg``); in CUHK a line is one image and the ID is its file name
(``0606.png``), matched by stem, since images may have been re-encoded (``0606.jpg``). Whether a line
names an image is read from the ID (an image extension), not from the subset's name.

The names produced are ``PETA.mat``'s 105, in its order (``PETA_ATTRS``): ``footwearSneakers`` is
read as ``footwearSneaker``, and the four attributes the ReadMe says were discarded are dropped. Any
other token is an error naming the file and line: the vocabulary is closed, and a misspelling
silently dropped would turn a positive label of every image of that person into a negative.

Identity = (subset, ID), numeric IDs without leading zeros (``0053`` = ``53``, as ``PETA.mat``
counts them). A CUHK image is its own identity: the release links no two CUHK images of one person.
"""
from __future__ import annotations

import logging
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path, PurePath

import numpy as np

from dataset.base import DataError

log = logging.getLogger(__name__)

RAW_DIR = "PETA dataset"
ARCHIVE = "archive"
LABEL_FILE = "Label.txt"
IMAGE_SUFFIXES = frozenset({".bmp", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".gif", ".ppm", ".pgm", ".webp"})
# The ten source subsets; PETA.mat numbers them 1..10 in this (case-insensitive alphabetical) order.
PETA_SUBSETS = ("3DPeS", "CAVIAR4REID", "CUHK", "GRID", "i-LID", "MIT", "PRID", "SARC3D", "TownCentre", "VIPeR")

_COLOURS = ("Black", "Blue", "Brown", "Green", "Grey", "Orange", "Pink", "Purple", "Red", "White", "Yellow")
# PETA.mat's order: the 35 evaluated attributes, the 4 x 11 colours, then the other 26 binary ones.
PETA_EVAL = [
    "personalLess30", "personalLess45", "personalLess60", "personalLarger60", "carryingBackpack", "carryingOther",
    "lowerBodyCasual", "upperBodyCasual", "lowerBodyFormal", "upperBodyFormal", "accessoryHat", "upperBodyJacket",
    "lowerBodyJeans", "footwearLeatherShoes", "upperBodyLogo", "hairLong", "personalMale", "carryingMessengerBag",
    "accessoryMuffler", "accessoryNothing", "carryingNothing", "upperBodyPlaid", "carryingPlasticBags",
    "footwearSandals", "footwearShoes", "lowerBodyShorts", "upperBodyShortSleeve", "lowerBodyShortSkirt",
    "footwearSneaker", "upperBodyThinStripes", "accessorySunglasses", "lowerBodyTrousers", "upperBodyTshirt",
    "upperBodyOther", "upperBodyVNeck"]
PETA_ATTRS = PETA_EVAL + [f"{part}{c}" for part in ("upperBody", "lowerBody", "hair", "footwear") for c in _COLOURS] + [
    "accessoryHeadphone", "personalLess15", "carryingBabyBuggy", "hairBald", "footwearBoots", "lowerBodyCapri",
    "carryingShoppingTro", "carryingUmbrella", "personalFemale", "carryingFolder", "accessoryHairBand",
    "lowerBodyHotPants", "accessoryKerchief", "lowerBodyLongSkirt", "upperBodyLongSleeve", "lowerBodyPlaid",
    "lowerBodyThinStripes", "carryingLuggageCase", "upperBodyNoSleeve", "hairShort", "footwearStocking",
    "upperBodySuit", "carryingSuitcase", "lowerBodySuits", "upperBodySweater", "upperBodyThickStripes"]
RENAMED = {"footwearSneakers": "footwearSneaker"}  # Label.txt spelling -> PETA.mat spelling
DISCARDED = ("accessoryFaceMask", "accessoryShawl", "lowerBodyLogo", "lowerBodyThickStripes")  # ReadMe: < 10 images

# Which "_"-separated field of a file stem is the camera / view (negative: from the end).
# 3DPeS's second field is a sequence number and TownCentre's a frame; CAVIAR4REID, CUHK, i-LID encode none.
CAMERA_FIELD = {"grid": 1, "prid": 1, "sarc3d": 1, "viper": -1, "mit": -1}
_VIEW_ALIASES = {"fore": "front"}  # MIT writes the frontal view as "fore"


@dataclass
class RawPeta:
    """The labelled images of a raw release, subsets in case-insensitive alphabetical order, then stems sorted."""

    root: Path  # the "PETA dataset" folder
    image_paths: list[Path]
    labels: np.ndarray  # (N, 105) float32, PETA_ATTRS order
    subsets: list[str]  # subset folder name per image
    persons: list[str]  # identity within the subset
    cameras: list[str]  # camera / view, "" where the file name encodes none

    def identity_keys(self) -> list[str]:
        return [f"{s}/{p}" for s, p in zip(self.subsets, self.persons)]

    def identity_codes(self) -> np.ndarray:
        return codes(self.identity_keys())

    def camera_codes(self) -> np.ndarray:
        return codes([f"{s}/{c}" if c else "" for s, c in zip(self.subsets, self.cameras)])


def codes(keys: list[str]) -> np.ndarray:
    """Each distinct key as an int (first appearance first); the empty key is -1 (unknown)."""
    table: dict[str, int] = {}
    return np.asarray([table.setdefault(k, len(table)) if k else -1 for k in keys], dtype=np.int64)


def norm_id(token: str) -> str:
    """IDs compare as numbers where they are numbers: ``0053`` = ``53``."""
    token = token.strip()
    return str(int(token)) if token.isdigit() else token


def find_raw_dir(root: Path) -> Path | None:
    """``root/PETA dataset``, or ``root`` itself when it holds ``<subset>/archive/Label.txt`` folders."""
    if (root / RAW_DIR).is_dir():
        return root / RAW_DIR
    if any((p / ARCHIVE / LABEL_FILE).is_file() for p in root.iterdir() if p.is_dir()):
        return root
    return None


def _vocabulary() -> dict[str, int | None]:
    """Lower-cased token -> column in PETA_ATTRS (None: discarded by the release)."""
    vocab: dict[str, int | None] = {a.lower(): j for j, a in enumerate(PETA_ATTRS)}
    vocab.update({k.lower(): PETA_ATTRS.index(v) for k, v in RENAMED.items()})
    vocab.update({d.lower(): None for d in DISCARDED})
    return vocab


def line_key(token: str) -> tuple[bool, str]:
    """(names one image?, key): CUHK's ``0606.png`` names an image (key = stem), ``0053`` a person."""
    p = PurePath(token)
    if p.suffix.lower() in IMAGE_SUFFIXES:
        return True, norm_id(p.stem)
    return False, norm_id(token)


def read_label_file(path: Path) -> tuple[dict[tuple[bool, str], tuple[int, str, np.ndarray]], Counter]:
    """``Label.txt`` as {line key: (line number, ID, 105 labels)} and a count of discarded tokens."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not a text file ({e}); restore the release's Label.txt") from None
    vocab, lines, dropped = _vocabulary(), {}, Counter()
    for no, line in enumerate(text.splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        row = np.zeros(len(PETA_ATTRS), np.float32)
        for tok in tokens[1:]:
            col = vocab.get(tok.lower(), -1)
            if col == -1:
                raise DataError(f"{path}, line {no}: unknown attribute '{tok}' (ID {tokens[0]}); PETA's 105 names "
                                "are PETA_ATTRS in dataset/public/peta_raw.py - fix the spelling in the file")
            if col is None:
                dropped[tok] += 1
            else:
                row[col] = 1.0
        key = line_key(tokens[0])
        if key in lines:
            raise DataError(f"{path}: ID {tokens[0]} appears on lines {lines[key][0]} and {no}; keep one line per ID")
        lines[key] = (no, tokens[0], row)
    return lines, dropped


def camera_of(subset: str, stem: str) -> str:
    """The camera / view encoded in a file stem (lower case), "" where the subset encodes none."""
    pos = CAMERA_FIELD.get(subset.lower())
    fields = stem.split("_")
    if pos is None or len(fields) < 2:
        return ""
    value = fields[pos].lower()
    return _VIEW_ALIASES.get(value, value)


def image_files(folder: Path) -> list[Path]:
    """Images of ``folder`` (any image extension, any case), sorted by stem then name."""
    files = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    return sorted(files, key=lambda p: (p.stem, p.name))


@dataclass
class _Subset:
    paths: list[Path]
    labels: list[np.ndarray]
    persons: list[str]
    cameras: list[str]
    dropped: Counter


def _read_subset(folder: Path) -> _Subset:
    """Match the images of one subset to its Label.txt lines; log lines without images and vice versa."""
    label_file = folder / ARCHIVE / LABEL_FILE
    if not label_file.is_file():
        raise DataError(f"{label_file} not found: every folder of '{RAW_DIR}' must hold archive/{LABEL_FILE} "
                        "(remove the stray folder or restore the file)")
    lines, dropped = read_label_file(label_file)
    out, used, unlabelled = _Subset([], [], [], [], dropped), set(), []
    for img in image_files(folder / ARCHIVE):
        key = (True, norm_id(img.stem))
        if key not in lines:
            key = (False, norm_id(img.stem.split("_")[0]))
        if key not in lines:
            unlabelled.append(img.name)
            continue
        used.add(key)
        out.paths.append(img)
        out.labels.append(lines[key][2])
        out.persons.append(key[1])
        out.cameras.append(camera_of(folder.name, img.stem))
    no_image = [ident for key, (_, ident, _) in lines.items() if key not in used]
    if no_image:
        log.warning("PETA %s: %d %s line(s) name no image (%s); skipped", folder.name, len(no_image), LABEL_FILE,
                    ", ".join(no_image[:8]) + (" ..." if len(no_image) > 8 else ""))
    if unlabelled:
        log.warning("PETA %s: %d image(s) have no %s line (%s); skipped", folder.name, len(unlabelled), LABEL_FILE,
                    ", ".join(unlabelled[:8]) + (" ..." if len(unlabelled) > 8 else ""))
    return out


def read_raw_release(raw_dir: Path) -> RawPeta:
    """Every labelled image of the release under ``raw_dir`` (the ``PETA dataset`` folder)."""
    folders = sorted((p for p in raw_dir.iterdir() if p.is_dir() and not p.name.startswith((".", "__"))),
                     key=lambda p: (p.name.lower(), p.name))
    if not folders:
        raise DataError(f"{raw_dir} holds no subset folder (<subset>/{ARCHIVE}/{LABEL_FILE}); "
                        "see dataset/public/README.md for the layout")
    raw = RawPeta(raw_dir, [], np.zeros((0, len(PETA_ATTRS)), np.float32), [], [], [])
    rows, dropped = [], Counter()
    for folder in folders:
        sub = _read_subset(folder)
        raw.image_paths += sub.paths
        rows += sub.labels
        raw.subsets += [folder.name] * len(sub.paths)
        raw.persons += sub.persons
        raw.cameras += sub.cameras
        dropped += sub.dropped
        log.info("PETA %s: %d images, %d identities, cameras/views %s", folder.name, len(sub.paths),
                 len(set(sub.persons)), sorted(set(sub.cameras) - {""}) or "not encoded")
    if not rows:
        raise DataError(f"{raw_dir}: no image matches a {LABEL_FILE} line; see dataset/public/README.md")
    raw.labels = np.stack(rows)
    if dropped:
        log.info("PETA: attribute tokens discarded by the release (ReadMe) dropped: %s", dict(sorted(dropped.items())))
    log.info("PETA raw release: %d images, %d identities, %d subsets", len(rows), len(set(raw.identity_keys())),
             len(folders))
    return raw


def align_mat(raw: RawPeta, subset_col: np.ndarray, person_col: np.ndarray, file: Path) -> np.ndarray:
    """PETA.mat row -> index into ``raw`` (-1 where the row's subset is absent from the release).

    Rows are ordered by subset (bookkeeping column 3: 1..10 = PETA_SUBSETS), then by file name; each
    row's identity (column 4) must match the image at the same place, else the error names the row.
    """
    by_subset: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(raw.subsets):
        by_subset[s.lower()].append(i)
    out = np.full(len(subset_col), -1, np.int64)
    for k in np.unique(subset_col):
        rows = np.flatnonzero(subset_col == k)
        if k != int(k) or not 1 <= k <= len(PETA_SUBSETS):
            raise DataError(f"{file}: row {rows[0] + 1} has subset {k:g} (bookkeeping column 3); PETA's subsets are "
                            f"1..{len(PETA_SUBSETS)} - this is not the release's PETA.mat")
        name = PETA_SUBSETS[int(k) - 1]
        mine = by_subset.pop(name.lower(), None)
        if mine is not None:
            _match_rows(raw, rows, np.asarray(mine), person_col, file)
            out[rows] = mine
    for s, idx in by_subset.items():
        log.warning("PETA: %d images of subset %s have no PETA.mat row; they are in no partition", len(idx),
                    raw.subsets[idx[0]])
    return out


def _match_rows(raw: RawPeta, rows: np.ndarray, mine: np.ndarray, person_col: np.ndarray, file: Path) -> None:
    """The rows of one subset against its images, place by place."""
    name = raw.subsets[mine[0]]
    for r, i in zip(rows, mine):
        pid = norm_id(f"{person_col[r]:.0f}")
        if pid != raw.persons[i]:
            raise DataError(f"{file}: row {r + 1} is {name} identity {pid}, but image {raw.image_paths[i].name} "
                            f"at its place is identity {raw.persons[i]}; this PETA.mat does not belong to the "
                            "release (remove it, or set DATASET.PETA_SPLIT identity)")
    if len(rows) != len(mine):
        extra = (f"row {rows[len(mine)] + 1} has no image" if len(rows) > len(mine)
                 else f"image {raw.image_paths[mine[len(rows)]].name} has no row")
        raise DataError(f"{file}: {len(rows)} rows of {name} but the release has {len(mine)} labelled images of it "
                        f"({extra}); use the PETA.mat of this release or set DATASET.PETA_SPLIT identity")
