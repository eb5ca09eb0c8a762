"""Synthetic low-quality augmentation (TRAIN.DATAAUG.LOW_QUALITY): what it does to images, its
determinism (resume, DDP slices), and its config check."""
from __future__ import annotations

import pytest
import torch

from configs import load_config
from configs.errors import ConfigError
from dataset import degrade
from dataset.augment import augment_batch
from dataset.degrade import low_quality
from tests.conftest import REPO


def gen(seed: int = 3) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def stripes(b: int = 6, h: int = 64, w: int = 32) -> torch.Tensor:
    """uint8 images of 1-px vertical stripes (all detail at the highest frequency)."""
    x = torch.zeros(b, 3, h, w, dtype=torch.uint8)
    x[..., ::2] = 255
    return x


def detail(x: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of horizontal neighbours per image (255 for the stripes)."""
    return (x[..., 1:].float() - x[..., :-1].float()).abs().mean((1, 2, 3))


def test_every_image_loses_detail_at_probability_one():
    x = stripes()
    out = low_quality(x, gen(), 1.0)
    assert out.dtype == torch.uint8 and out.shape == x.shape
    assert (detail(x) == 255).all() and (detail(out) < 0.25 * 255).all()  # a >= 1/0.75 downscale kills 1-px stripes


def test_probability_zero_and_the_draws_it_leaves():
    x = stripes()
    assert torch.equal(low_quality(x, gen(), 0.0), x)
    # augment_batch with low_quality 0 draws nothing more: an old run's augmentation is unchanged
    g1, g2 = gen(), gen()
    a = augment_batch(x, g1, erase=0.5)
    b = augment_batch(x, g2, erase=0.5, low_quality=0.0)
    assert torch.equal(a, b) and torch.equal(torch.rand(3, generator=g1), torch.rand(3, generator=g2))


def test_deterministic_and_a_ddp_slice_equals_the_full_batch():
    x = torch.randint(0, 256, (6, 3, 48, 24), generator=gen(0), dtype=torch.uint8)
    full = low_quality(x, gen(), 0.7)
    assert torch.equal(full, low_quality(x, gen(), 0.7))
    assert torch.equal(low_quality(x[2:4], gen(), 0.7, total=6, start=2), full[2:4])
    assert (low_quality(x, gen(), 1.0) != x).flatten(1).any(1).all()
    # float images in [0, 1] get the same degradation, on their scale
    f = low_quality(x.float() / 255, gen(), 0.7)
    assert f.dtype == torch.float32 and 0.0 <= float(f.min()) and float(f.max()) <= 1.0
    assert (f * 255 - full.float()).abs().max() <= 1.0


def test_each_stage_does_its_part(monkeypatch):
    x = torch.full((1, 3, 40, 20), 128, dtype=torch.uint8)
    # only the downscale: a flat image stays flat
    monkeypatch.setattr(degrade, "STAGE_P", 0.0)
    assert torch.equal(low_quality(x, gen(), 1.0), x)
    # every stage on: noise makes the flat image vary, by about the drawn standard deviation
    monkeypatch.setattr(degrade, "STAGE_P", 1.0)
    out = low_quality(x, gen(), 1.0).float()
    assert 1.0 < float(out.std()) < 12.0 and abs(float(out.mean()) - 128) < 3


def test_config_key_is_checked():
    cfg = load_config(REPO / "configs" / "demo.yaml", ["TRAIN.DATAAUG.LOW_QUALITY", "0.3"])
    assert cfg.TRAIN.DATAAUG.LOW_QUALITY == pytest.approx(0.3)
    with pytest.raises(ConfigError, match="LOW_QUALITY = 1.5 is a probability"):
        load_config(REPO / "configs" / "demo.yaml", ["TRAIN.DATAAUG.LOW_QUALITY", "1.5"])
    with pytest.raises(ConfigError, match="TYPE none turns every augmentation off"):
        load_config(REPO / "configs" / "demo.yaml", ["TRAIN.DATAAUG.LOW_QUALITY", "0.3", "TRAIN.DATAAUG.TYPE", "none"])
