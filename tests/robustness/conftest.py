"""Fixtures of the robustness suite: one generated SYNTH set and one uninterrupted reference run,
shared by every test that compares an interrupted/resumed run against it."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest.register_assert_rewrite("tests.robustness._helpers")  # its asserts explain their failures too

from tests.robustness._helpers import exp_dir, load, tiny_yaml  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="package", autouse=True)
def one_thread():
    """One intra-op thread, here and in the subprocesses (OMP_NUM_THREADS=1, see _helpers.env): on a
    busy 2-core machine a 2-thread step is up to 100x slower, and equal thread counts keep every run of
    the suite numerically identical (reference vs resumed runs are compared bit for bit)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="package")
def synth_root(tmp_path_factory) -> Path:
    """The generated images (written once, reused by every run of the suite)."""
    from dataset.synthetic import generate

    root = tmp_path_factory.mktemp("synth")
    generate(root, 120, 0, 0.1)
    return root


@pytest.fixture(scope="package")
def reference(tmp_path_factory, synth_root, one_thread) -> Path:
    """The experiment folder of an uninterrupted tiny run (3 epochs), trained in this process."""
    from tools.engine import run_training as train

    folder = tmp_path_factory.mktemp("reference")
    cfg_file = tiny_yaml(folder, synth_root, NAME="ref")
    train(load(cfg_file))
    return exp_dir(cfg_file)


@pytest.fixture
def tiny(tmp_path, synth_root):
    """``tiny(**dotted_overrides) -> yaml path`` of a tiny run under this test's tmp_path."""

    def make(**overrides) -> Path:
        return tiny_yaml(tmp_path, synth_root, **overrides)

    return make
