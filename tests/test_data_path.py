"""The data path: the uint8 cache holds exactly the decoded files, survives a disk round trip, and
the streaming DataLoader path (with or without workers) yields the same batches for a seed/epoch."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dataset import build_data, build_loaders
from dataset.images import load_image

CPU = torch.device("cpu")


def _batches(cfg, split: str, epoch: int = 1):
    data = build_data(cfg)
    loaders, _ = build_loaders(cfg, data, [cfg.DATASET.TRAIN_SPLIT, cfg.DATASET.VAL_SPLIT], CPU)
    ld = loaders[split]
    ld.set_epoch(epoch)
    return data, [(x.clone(), y.clone(), idx.clone()) for x, y, idx in ld]


def test_cached_batches_equal_the_decoded_files(tiny_cfg):
    cfg = tiny_cfg(**{"TEST.BATCH_SIZE": "5", "TRAIN.DATAAUG.TYPE": "none"})
    size = (cfg.DATASET.HEIGHT, cfg.DATASET.WIDTH)
    for split in ("train", "val"):
        data, batches = _batches(cfg, split)
        seen = np.concatenate([idx.numpy() for _, _, idx in batches])
        if split == "val":  # every row once, in order
            assert np.array_equal(seen, data.splits["val"])
        else:  # a shuffled subset of train, whole batches only
            assert len(set(seen)) == len(seen) and set(seen) <= set(data.splits["train"])
            assert len(seen) == len(data.splits["train"]) // cfg.TRAIN.BATCH_SIZE * cfg.TRAIN.BATCH_SIZE
        for x, y, idx in batches:
            assert x.dtype == torch.float32 and x.shape[1:] == (3, *size)
            direct = np.stack([load_image(data.image_paths[i], size, cfg.DATASET.MAX_IMAGE_PIXELS) for i in idx])
            expect = torch.from_numpy(direct).permute(0, 3, 1, 2).float() / 255
            torch.testing.assert_close(x, expect, rtol=0, atol=1e-6)
            assert torch.equal(y, torch.from_numpy(data.labels[idx.numpy()]))


def test_disk_cache_round_trip(tiny_cfg, tmp_path, monkeypatch):
    cache_dir = tmp_path / "img_cache"
    cfg = tiny_cfg(**{"TEST.BATCH_SIZE": "5", "TRAIN.DATAAUG.TYPE": "none", "DATASET.CACHE_DIR": str(cache_dir)})
    _, first = _batches(cfg, "val")
    files = list(cache_dir.glob("*.npz"))
    assert len(files) == 1 and f"{cfg.DATASET.HEIGHT}x{cfg.DATASET.WIDTH}" in files[0].name
    assert not list(cache_dir.glob("*.tmp*"))

    import dataset.loader

    def no_decoding(*a, **k):
        raise AssertionError("the disk cache should have been used")

    monkeypatch.setattr(dataset.loader, "load_image", no_decoding)
    _, second = _batches(cfg, "val")
    assert len(second) == len(first)
    for (x1, y1, i1), (x2, y2, i2) in zip(first, second):
        assert torch.equal(x1, x2) and torch.equal(y1, y2) and torch.equal(i1, i2)

    # another input size is another cache file (so it decodes again)
    monkeypatch.undo()
    other = tiny_cfg(**{"TEST.BATCH_SIZE": "5", "TRAIN.DATAAUG.TYPE": "none", "DATASET.CACHE_DIR": str(cache_dir), "DATASET.HEIGHT": "48"})
    _batches(other, "val")
    assert len(list(cache_dir.glob("*.npz"))) == 2


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("aug", ["none", "base"])
def test_streaming_path_yields_the_cached_batches(tiny_cfg, workers, aug):
    cached_cfg = tiny_cfg(**{"TEST.BATCH_SIZE": "5", "TRAIN.DATAAUG.TYPE": aug})
    stream_cfg = tiny_cfg(**{"TEST.BATCH_SIZE": "5", "TRAIN.DATAAUG.TYPE": aug, "DATASET.CACHE": "False", "TRAIN.NUM_WORKERS": str(workers)})
    for split in ("train", "val") if aug == "none" else ("train",):
        _, cached = _batches(cached_cfg, split, epoch=2)
        _, streamed = _batches(stream_cfg, split, epoch=2)
        assert len(cached) == len(streamed) > 1
        for (x1, y1, i1), (x2, y2, i2) in zip(cached, streamed):
            assert torch.equal(i1, i2) and torch.equal(y1, y2)
            assert torch.equal(x1, x2)


def test_epochs_differ_and_repeat(tiny_cfg):
    """The shuffle and the augmentation depend on (seed, epoch) only: same epoch = same batches."""
    cfg = tiny_cfg()
    _, a = _batches(cfg, "train", epoch=3)
    _, b = _batches(cfg, "train", epoch=3)
    _, c = _batches(cfg, "train", epoch=4)
    assert all(torch.equal(p[0], q[0]) and torch.equal(p[2], q[2]) for p, q in zip(a, b))
    assert not torch.equal(a[0][2], c[0][2])


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_gpu_gather_augmentation_equals_the_cpu_copies(dtype):
    """The GPU path (one gather) and the CPU path (slice copies) give identical batches, including
    shifts as large as the image (checked here on CPU tensors)."""
    from dataset.augment import _flip_shift_copies, _flip_shift_gather, augment_batch

    g = torch.Generator().manual_seed(0)
    x = (torch.rand(12, 3, 10, 6, generator=g) * 255).to(dtype)
    flip = torch.rand(12, generator=g) < 0.5
    shift = torch.randint(-9, 10, (12, 2), generator=g)
    assert torch.equal(_flip_shift_gather(x, flip, shift), _flip_shift_copies(x, flip, shift))
    # a pure flip, and a shift by (1, 2) with zero fill, by hand
    one = x[:1]
    assert torch.equal(_flip_shift_copies(one, torch.tensor([True]), torch.zeros(1, 2, dtype=torch.long)),
                       one.flip(-1))
    moved = _flip_shift_copies(one, torch.tensor([False]), torch.tensor([[1, 2]]))
    assert torch.equal(moved[0, :, :-1, :-2], one[0, :, 1:, 2:]) and not moved[0, :, -1:].any() \
        and not moved[0, :, :, -2:].any()
    # rank r of N drawing for the global batch gets the single-process rows r*b:(r+1)*b
    full = augment_batch(x, torch.Generator().manual_seed(5), pad=3)
    half = augment_batch(x[6:], torch.Generator().manual_seed(5), pad=3, total=12, start=6)
    assert torch.equal(full[6:], half)
