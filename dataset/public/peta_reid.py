"""PETA's identities as a ReID benchmark (``DATASET.PETA_SPLIT reid``, raw release only).

Among PETA's subsets only PRID (cameras ``a`` / ``b``) and GRID (camera in the second field) encode
the camera, and both are single-shot: each paired person has one image in each of two cameras. So:

* ``train``: every image of the multi-shot subsets (3DPeS, CAVIAR4REID, i-LID, SARC3D, TownCentre)
  except the validation identities, plus both images of a seeded half of PRID's and GRID's paired
  identities;
* ``val_query`` / ``val_gallery`` (model selection, never the test identities): a seeded
  ``VAL_FRACTION`` of the multi-shot identities with two or more images, one random image each as the
  query and the others as the gallery (their cameras are mostly unknown, which the Market rule
  treats as "not the query's camera"); ``val`` = both;
* ``query``: of the other half of the pairs, the image that comes first by file name (PRID: camera
  ``a``); ``gallery``: the second image of those pairs plus every unpaired PRID / GRID image
  (distractors: a person seen by one camera only); ``test`` = query + gallery.

Subsets not named above (CUHK, MIT, VIPeR: in the release but not used by this protocol) are left
out of every split. Identities are (subset, person), so no person is in two splits.
"""
from __future__ import annotations

import logging

import numpy as np

from dataset.base import DataError
from dataset.public._common import VAL_FRACTION
from dataset.public.peta_raw import RawPeta

log = logging.getLogger(__name__)

MULTI_SHOT = ("3dpes", "caviar4reid", "i-lid", "sarc3d", "towncentre")
SINGLE_SHOT = ("grid", "prid")


def _paired(rows: np.ndarray, ids: np.ndarray, cams: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(identities seen by two or more cameras, rows of the others) within one single-shot subset."""
    pairs, lone = [], []
    for pid in np.unique(ids[rows]):
        mine = rows[ids[rows] == pid]
        if len(np.unique(cams[mine])) >= 2:
            pairs.append(pid)
        else:
            lone.append(mine)
    return np.asarray(pairs, np.int64), (np.concatenate(lone) if lone else np.zeros(0, np.int64))


def _query_and_rest(rows_by_id: list[np.ndarray], pick) -> tuple[np.ndarray, np.ndarray]:
    query = np.asarray([pick(r) for r in rows_by_id], np.int64)
    rest = np.setdiff1d(np.concatenate(rows_by_id), query) if rows_by_id else np.zeros(0, np.int64)
    return query, rest


def reid_split(raw: RawPeta, seed: int) -> dict[str, np.ndarray]:
    """The splits of the module note, as sorted row indices of ``raw``."""
    rng = np.random.default_rng(seed)
    subsets = np.asarray([s.lower() for s in raw.subsets])
    ids, cams = raw.identity_codes(), raw.camera_codes()
    train, query, gallery = [], [], []
    for name in SINGLE_SHOT:
        rows = np.flatnonzero(subsets == name)
        pairs, lone = _paired(rows, ids, cams)
        test_ids = rng.permutation(pairs)[len(pairs) // 2:]
        train.append(rows[np.isin(ids[rows], pairs) & ~np.isin(ids[rows], test_ids)])
        q, rest = _query_and_rest([rows[ids[rows] == p] for p in test_ids], lambda r: r[0])  # rows are name-sorted
        query.append(q)
        gallery += [rest, lone]
    multi = np.flatnonzero(np.isin(subsets, MULTI_SHOT))
    if not len(multi) or not sum(len(q) for q in query):
        raise DataError(f"{raw.root}: DATASET.PETA_SPLIT reid needs the multi-shot subsets ({', '.join(MULTI_SHOT)}) "
                        f"and paired PRID / GRID images; found subsets {sorted(set(raw.subsets))}")
    multi_ids, counts = np.unique(ids[multi], return_counts=True)
    shots = multi_ids[counts >= 2]
    val_ids = rng.permutation(shots)[:max(1, int(round(VAL_FRACTION * len(shots))))]
    val_q, val_g = _query_and_rest([multi[ids[multi] == p] for p in np.sort(val_ids)], lambda r: rng.choice(r))
    train.append(multi[~np.isin(ids[multi], val_ids)])
    out = {"train": np.concatenate(train), "val_query": val_q, "val_gallery": val_g,
           "query": np.concatenate(query), "gallery": np.concatenate(gallery)}
    out = {k: np.sort(v) for k, v in out.items()}
    out["val"] = np.sort(np.concatenate([val_q, val_g]))
    out["test"] = np.sort(np.concatenate([out["query"], out["gallery"]]))
    out["trainval"] = np.sort(np.concatenate([out["train"], out["val"]]))
    log.info("PETA ReID protocol (seed %d): train %d images / %d identities, val %d queries + %d gallery, "
             "test %d queries + %d gallery", seed, len(out["train"]), len(np.unique(ids[out["train"]])),
             len(val_q), len(val_g), len(out["query"]), len(out["gallery"]))
    return out
