"""Batches for the engine: an in-memory uint8 image cache (default) or streamed files.

Either way a batch is built from a list of row indices, decided up front from (seed, epoch),
so runs are reproducible, resumable mid-epoch and shardable across DDP ranks.
"""
from __future__ import annotations

import hashlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from tqdm import tqdm

from dataset.augment import augment_batch
from dataset.base import DataError
from dataset.images import BadImage, load_image, to_model_input

log = logging.getLogger(__name__)


class BadImageLog:
    """Counts skipped images; ``on_bad='error'`` turns the first one into a DataError."""

    def __init__(self, on_bad: str):
        self.on_bad = on_bad
        self.skipped: dict[str, str] = {}

    def report(self, path: Path, why: str) -> None:
        if self.on_bad == "error":
            raise DataError(f"bad image {path}: {why} (set DATASET.ON_BAD_IMAGE skip to skip such files)")
        if str(path) not in self.skipped and len(self.skipped) < 20:
            log.warning("skipping image %s: %s", path, why)
        self.skipped[str(path)] = why


def _cache_key(paths: list[Path], size_hw: tuple[int, int]) -> str:
    h = hashlib.sha1(f"{size_hw}".encode())
    for p in paths:
        st = p.stat() if p.exists() else None
        h.update(f"{p}|{st.st_size if st else -1}|{st.st_mtime_ns if st else -1}".encode())
    return h.hexdigest()[:16]


def build_cache(paths: list[Path], size_hw: tuple[int, int], max_pixels: int, bad: BadImageLog, *,
                cache_dir: str = "", desc: str = "caching images") -> tuple[torch.Tensor, np.ndarray]:
    """Decode + resize every image once: (N, 3, H, W) uint8 tensor and a bool mask of usable rows."""
    if cache_dir:
        file = Path(cache_dir) / f"images_{size_hw[0]}x{size_hw[1]}_{_cache_key(paths, size_hw)}.npz"
        if file.is_file():
            with np.load(file) as z:
                log.info("image cache loaded from %s", file)
                return torch.from_numpy(z["images"]), z["ok"]
    images = np.zeros((len(paths), size_hw[0], size_hw[1], 3), np.uint8)
    ok = np.ones(len(paths), bool)

    def work(i: int) -> tuple[int, np.ndarray | str]:
        try:
            return i, load_image(paths[i], size_hw, max_pixels)
        except BadImage as e:
            return i, str(e)

    with ThreadPoolExecutor(max_workers=4) as pool:  # PIL decodes without the GIL
        for i, res in tqdm(pool.map(work, range(len(paths))), total=len(paths), desc=desc, leave=False,
                           mininterval=1.0):
            if isinstance(res, str):
                ok[i] = False
                bad.report(paths[i], res)
            else:
                images[i] = res
    tensor = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    if cache_dir:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        tmp = file.with_suffix(f".{os.getpid()}.tmp.npz")  # DDP ranks may save at once: no shared temp file
        np.savez(tmp, images=tensor.numpy(), ok=ok)
        tmp.replace(file)
        log.info("image cache saved to %s", file)
    return tensor, ok


class _FileBatches(torch.utils.data.Dataset):
    """Streaming path: an item is a whole batch (an array of rows), decoded in a worker."""

    def __init__(self, paths: list[Path], size_hw: tuple[int, int], max_pixels: int, on_bad: str):
        self.paths, self.size_hw, self.max_pixels, self.on_bad = paths, size_hw, max_pixels, on_bad

    def __getitem__(self, rows: np.ndarray):
        imgs, keep, bad = [], [], []
        for r in rows:
            try:
                imgs.append(load_image(self.paths[r], self.size_hw, self.max_pixels))
                keep.append(r)
            except BadImage as e:
                if self.on_bad == "error":
                    raise DataError(f"bad image {self.paths[r]}: {e} (set DATASET.ON_BAD_IMAGE skip to skip it)")
                bad.append((str(self.paths[r]), str(e)))
        arr = np.stack(imgs) if imgs else np.zeros((0, *self.size_hw, 3), np.uint8)
        return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous(), torch.as_tensor(np.asarray(keep, np.int64)), bad


class BatchLoader:
    """Iterate (images float [0,1] on device, labels on device, row indices) for one split."""

    def __init__(self, rows: np.ndarray, labels: np.ndarray, batch_size: int, *, train: bool, seed: int,
                 device: torch.device, images: torch.Tensor | None = None, files: _FileBatches | None = None,
                 num_workers: int = 0, rank: int = 0, world: int = 1, augment: bool = True,
                 augment_on_device: bool = True,
                 bad: BadImageLog | None = None, sampler=None, identities: np.ndarray | None = None,
                 erase: float = 0.0, low_quality: float = 0.0):
        self.rows = np.asarray(rows, np.int64)
        self.labels = torch.as_tensor(labels, dtype=torch.float32)
        self.batch_size, self.train, self.seed, self.device = batch_size, train, seed, device
        self.images, self.files, self.num_workers = images, files, num_workers
        self.rank, self.world, self.augment = rank, world, augment and train
        self.augment_on_device = augment_on_device  # False: augment on the host, then copy
        self.bad = bad
        if train and batch_size % world:
            raise DataError(f"TRAIN.BATCH_SIZE {batch_size} is not divisible by the {world} DDP processes; "
                             "use a multiple of the process count")
        self.epoch = 0
        self.start_step = self._offset = 0
        self.position = 0  # batches of this epoch handed out so far, dropped all-bad ones included (resume point)
        self._per_rank = batch_size // world if train else batch_size
        self._loader = None
        # ReID (TASK reid / multitask): a PK batch sampler (dataset.samplers.PKSampler, already sliced per rank)
        # replaces the shuffle; targets become {"attrs": labels, "ids": class per row} (samplers.identity_lookup)
        self.sampler = sampler if train else None
        self.identities = None if identities is None else torch.as_tensor(identities, dtype=torch.long)
        self.erase, self.low_quality = erase, low_quality

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self.epoch, self.start_step = epoch, start_step

    def _batches(self) -> list[np.ndarray]:
        rows = self.rows
        if self.sampler is not None:  # seeded by (seed, epoch) like the shuffle: resumable mid-epoch
            self.sampler.set_epoch(self.epoch)
            batches = self.sampler.batches()
            self._per_rank = len(batches[0]) if batches else self._per_rank
            return batches
        if self.train:
            g = np.random.default_rng([self.seed, self.epoch])
            rows = rows[g.permutation(len(rows))]
            bs = min(self.batch_size, len(rows))  # a split smaller than one batch is one batch
            n = len(rows) // bs if bs else 0  # drop the ragged last batch
            # Rank r takes slice r of every global batch: a DDP step sees exactly the single-process
            # batch, and every rank has the same number of steps.
            self._per_rank = per = bs // self.world
            return [rows[i * bs + self.rank * per:i * bs + (self.rank + 1) * per] for i in range(n)]
        rows = rows[self.rank::self.world]
        return [rows[i:i + self.batch_size] for i in range(0, len(rows), self.batch_size)]

    def __len__(self) -> int:
        return len(self._batches())

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        batches = self._batches()[self.start_step:]
        self._offset, self.start_step = self.start_step, 0
        self.position = self._offset
        if self.images is not None:
            # The epoch's row indices reach the cache's device in one non-blocking copy: a blocking
            # host-to-GPU copy per step would wait for the GPU every step.
            flat = torch.as_tensor(np.concatenate(batches) if batches else np.zeros(0, np.int64))
            flat = flat.to(self.images.device, non_blocking=True)
            start = 0
            for step, rows in enumerate(batches):
                # index_select copies whole rows; advanced indexing is ~40x slower on CPU uint8
                imgs = self.images.index_select(0, flat[start:start + len(rows)])
                start += len(rows)
                self.position = self._offset + step + 1
                yield self._finish(imgs, rows, step)
            return
        if self._loader is None:
            self._loader = torch.utils.data.DataLoader(
                self.files, batch_size=None, sampler=_Batches(), num_workers=self.num_workers,
                pin_memory=self.device.type == "cuda", persistent_workers=self.num_workers > 0)
        self._loader.sampler.batches = batches
        for step, (imgs, keep, bad) in enumerate(self._loader):
            for path, why in bad:
                self.bad.report(Path(path), why)
            self.position = self._offset + step + 1
            if len(keep):
                yield self._finish(imgs, keep.numpy(), step)

    def _finish(self, imgs: torch.Tensor, rows: np.ndarray, step: int):
        x = imgs.to(self.device, non_blocking=True) if self.augment_on_device else imgs
        if self.augment:
            # tuple-of-int hashes are stable across processes, so the draw depends on (seed, epoch, step);
            # drawn for the global batch, this rank's slice kept (DDP = single process). uint8: 4x less to move.
            gen = torch.Generator().manual_seed(hash((self.seed, self.epoch, step + self._offset)) & 0x7FFFFFFF)
            x = augment_batch(x, gen, total=max(self._per_rank, x.shape[0]) * self.world,
                              start=self.rank * max(self._per_rank, x.shape[0]), erase=self.erase,
                              low_quality=self.low_quality)
        x = to_model_input(x.to(self.device, non_blocking=True))  # uint8 -> float32 [0, 1] in one pass
        y = self.labels[torch.as_tensor(rows)].to(self.device, non_blocking=True)
        if self.identities is not None:
            y = {"attrs": y, "ids": self.identities[torch.as_tensor(rows)].to(self.device, non_blocking=True)}
        return x, y, torch.as_tensor(rows)


class _Batches:
    """A sampler whose batch list is replaced every epoch (works with persistent workers)."""

    batches: list[np.ndarray] = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)
