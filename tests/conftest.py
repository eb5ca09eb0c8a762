"""Shared fixtures: tiny configs that train in seconds on a CPU, and the real NATIVE data if present."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]


def native_root() -> Path | None:
    """data/NATIVE in the checkout, else ../shared/data/NATIVE beside it (CI has the latter)."""
    for p in (REPO / "data" / "NATIVE", REPO.parent / "shared" / "data" / "NATIVE"):
        if (p / "label" / "refined_Native_dataset.xlsx").is_file():
            return p
    return None


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """The suite runs on 2 shared cores: OpenMP threads spinning on busy cores make small
    models up to 100x slower, so tests use one thread (and stay bit-reproducible)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True, scope="session")
def _no_footage_index_by_default():
    """Video mode ingests into TEST.INDEX (default exp_results/footage.sqlite) and skips a video already there:
    tests that process videos with the default config ingest nowhere (the index tests name their own)."""
    from configs.default import _C

    old = _C.TEST.INDEX
    _C.TEST.INDEX = ""
    yield
    _C.TEST.INDEX = old


@pytest.fixture
def native_data() -> Path:
    root = native_root()
    if root is None:
        pytest.skip("real NATIVE data not found at data/NATIVE or ../shared/data/NATIVE")
    return root


def tiny_opts(tmp_path: Path, **extra) -> list[str]:
    """KEY VALUE overrides for a SYNTH run that takes seconds: small images, tiny CNN, 2 epochs."""
    opts = {
        "OUTPUT_DIR": str(tmp_path / "exp"), "DATASET.ROOT": str(tmp_path / "synth"),
        "DATASET.SYNTH_SIZE": "96", "DATASET.HEIGHT": "64", "DATASET.WIDTH": "32",
        "MODEL.BACKBONE": "resnet10t", "TRAIN.BATCH_SIZE": "16", "TRAIN.MAX_EPOCH": "2",
        "VIS.TENSORBOARD": "False", "REDIRECTOR": "False",
    }
    opts.update({k: str(v) for k, v in extra.items()})
    return [x for kv in opts.items() for x in kv]


@pytest.fixture
def tiny_cfg(tmp_path):
    """A factory: tiny_cfg(**overrides) -> frozen config based on configs/demo.yaml."""
    from configs import load_config

    def make(**extra):
        return load_config(REPO / "configs" / "demo.yaml", tiny_opts(tmp_path, **extra))

    return make
