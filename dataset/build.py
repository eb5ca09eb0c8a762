"""cfg -> PARData -> one BatchLoader per split."""
from __future__ import annotations

import logging

import numpy as np
import torch
from yacs.config import CfgNode as CN

from dataset.attr_map import relabel_by_map, resolve_map_path
from dataset.base import DataError, PARData
from dataset.loader import BadImageLog, BatchLoader, _FileBatches, build_cache
from dataset.registry import read_dataset
from dataset.samplers import PKSampler, identity_lookup

log = logging.getLogger(__name__)


def build_data(cfg: CN) -> PARData:
    """Read the dataset named in the config (plus DATASET.SOURCES for mixed training)."""
    data = read_dataset(cfg)
    if cfg.DATASET.SOURCES:
        data = _mix_sources(cfg, data)
    for split in {cfg.DATASET.TRAIN_SPLIT, cfg.DATASET.VAL_SPLIT}:
        if split not in data.splits:
            raise DataError(f"{data.name} has no split '{split}' (has {', '.join(data.splits)}); "
                            "set DATASET.TRAIN_SPLIT / VAL_SPLIT")
        if len(data.splits[split]) == 0:
            raise DataError(f"{data.name}: split '{split}' is empty; check the DATASET.*_SPLIT fractions")
    return data


def _mix_sources(cfg: CN, data: PARData) -> PARData:
    """Train on this dataset's train split plus every source's; validate and test on this one alone."""
    from configs.loader import load_config
    from dataset.public.mixed import merge_datasets

    mapping: dict[str, dict[str, str]] = {}
    for entry in cfg.DATASET.ATTR_MAP:
        if len(entry) != 3:
            raise DataError(f"DATASET.ATTR_MAP entry {entry!r} must be [source dataset, source attribute, shared attribute]")
        mapping.setdefault(str(entry[0]), {})[str(entry[1])] = str(entry[2])
    maps = {}
    for entry in cfg.DATASET.SOURCE_MAPS:
        if len(entry) != 2:
            raise DataError(f"DATASET.SOURCE_MAPS entry {entry!r} must be [source dataset, map name or file]")
        maps[str(entry[0])] = resolve_map_path(str(entry[1]))
    extra = [read_dataset(load_config(path)) for path in cfg.DATASET.SOURCES]
    extra = [relabel_by_map(d, maps[d.name], data.attr_names) if d.name in maps else d for d in extra]
    merged = merge_datasets([data, *extra], data.attr_names, mapping, data.groups)
    train = cfg.DATASET.TRAIN_SPLIT
    own = {s: merged.splits[f"{data.name}/{s}"] for s in data.splits}
    own[train] = np.concatenate([idx for k, idx in merged.splits.items() if k.endswith(f"/{train}")])
    merged.splits = own
    log.info("mixed training: %d train images from %s + %d source(s)", len(own[train]), data.name, len(extra))
    return merged


# TASK reid / multitask: the retrieval pairs (query split, gallery split) under their metrics.csv prefix;
# the best epoch is chosen on "val" (cut from the training identities), never on the test pair.
REID_PAIRS = {"val": ("val_query", "val_gallery"), "test": ("query", "gallery")}


def reid_pairs(cfg: CN) -> dict[str, tuple[str, str]]:
    """The pairs a ReID run evaluates: val, and test unless DATASET.TEST_SPLIT is "" (as PAR's test)."""
    return {tag: pair for tag, pair in REID_PAIRS.items() if tag == "val" or cfg.DATASET.TEST_SPLIT}


def used_splits(cfg: CN, data: PARData) -> list[str]:
    d, task = cfg.DATASET, cfg.get("TASK", "par")
    names = [d.TRAIN_SPLIT, d.VAL_SPLIT] if task != "reid" else [d.TRAIN_SPLIT]
    if task != "reid" and d.TEST_SPLIT and d.TEST_SPLIT in data.splits and len(data.splits[d.TEST_SPLIT]):
        names.append(d.TEST_SPLIT)
    if task != "par":
        pairs = [s for pair in reid_pairs(cfg).values() for s in pair]
        missing = [s for s in pairs if len(data.splits.get(s, ())) == 0]
        if missing or data.identities is None or data.cameras is None:
            raise DataError(f"TASK {task}: {data.name} has no identities / cameras or no (non-empty) split "
                            f"{', '.join(missing) or 'with identities'}; use DATASET.NAME MARKET1501 or DUKEMTMC")
        names += pairs
    return list(dict.fromkeys(names))


def identity_batches(cfg: CN, data: PARData, rows: np.ndarray, *, rank: int = 0,
                     world: int = 1) -> tuple[PKSampler, np.ndarray]:
    """TASK reid / multitask training: the PK batch sampler over ``rows`` and the per-row identity class."""
    lookup, _ = identity_lookup(data.identities, rows)
    sampler = PKSampler(rows, data.identities[rows], cfg.TRAIN.BATCH_SIZE, cfg.REID.NUM_INSTANCE, seed=cfg.SEED,
                        rank=rank, world=world)
    return sampler, lookup


def build_loaders(cfg: CN, data: PARData, splits: list[str], device: torch.device, *, rank: int = 0,
                  world: int = 1) -> tuple[dict[str, BatchLoader], BadImageLog]:
    """Loaders for ``splits``. With DATASET.CACHE the images of those splits are decoded once;
    rows whose image is bad are dropped from the splits (and counted)."""
    d = cfg.DATASET
    size = (d.HEIGHT, d.WIDTH)
    bad = BadImageLog(d.ON_BAD_IMAGE)
    rows_used = np.unique(np.concatenate([data.splits[s] for s in splits]))
    images = None
    keep = {s: data.splits[s] for s in splits}
    files = None
    if d.CACHE:
        tensor, ok = build_cache([data.image_paths[i] for i in rows_used], size, d.MAX_IMAGE_PIXELS, bad,
                                 cache_dir=d.CACHE_DIR, desc=f"caching {len(rows_used)} {data.name} images")
        images = torch.zeros((len(data.image_paths), 3, *size), dtype=torch.uint8)
        images[torch.as_tensor(rows_used)] = tensor
        good = set(rows_used[ok].tolist())
        keep = {s: np.asarray([r for r in data.splits[s] if r in good], np.int64) for s in splits}
        # NATIVE at 256x128 is ~175 MB: on the GPU, batches never cross PCIe again. A large dataset
        # (PA100k: ~10 GB) stays in host memory and each batch is copied (then augmented on the GPU).
        if (device.type == "cuda" and cfg.TRAIN.DATAAUG.ON_GPU
                and images.nbytes <= 0.1 * torch.cuda.get_device_properties(device).total_memory):
            images = images.to(device)
        log.info("image cache: %.0f MB on %s", images.nbytes / 2**20, images.device)
        if bad.skipped:
            log.warning("%d image(s) skipped as unreadable (DATASET.ON_BAD_IMAGE=skip)", len(bad.skipped))
    else:
        files = _FileBatches(data.image_paths, size, d.MAX_IMAGE_PIXELS, d.ON_BAD_IMAGE)
    loaders = {}
    for s in splits:
        train = s == d.TRAIN_SPLIT
        if len(keep[s]) == 0:
            raise DataError(f"split '{s}' has no usable image left; check DATASET.IMAGE_PATH")
        bs = cfg.TRAIN.BATCH_SIZE if train else cfg.TEST.BATCH_SIZE
        sampler, ids = (identity_batches(cfg, data, keep[s], rank=rank, world=world)
                        if train and cfg.get("TASK", "par") != "par" else (None, None))
        loaders[s] = BatchLoader(keep[s], data.labels, bs, train=train, seed=cfg.SEED, device=device,
                                 images=images, files=files, num_workers=cfg.TRAIN.NUM_WORKERS,
                                 rank=rank, world=world, augment=cfg.TRAIN.DATAAUG.TYPE != "none", bad=bad,
                                 augment_on_device=cfg.TRAIN.DATAAUG.ON_GPU, sampler=sampler, identities=ids,
                                 erase=cfg.TRAIN.DATAAUG.RANDOM_ERASING,
                                 low_quality=cfg.TRAIN.DATAAUG.LOW_QUALITY)
    return loaders, bad
