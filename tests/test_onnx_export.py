"""ONNX export of the lite preset (C2T-lite at a tiny input size, random init): dynamic batch axis,
probabilities out, onnxruntime matches PyTorch within 1e-4."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests._video_helpers import ATTRS, GROUPS, make_checkpoint
from scripts.export_onnx import ExportError, main, verify_onnx
from tools.inference import Predictor

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("onnx")
    ckpt = make_checkpoint(d / "best_model.pth", model="c2t_lite")
    out = main(["--checkpoint", str(ckpt), "--out", str(d / "par.onnx")])  # the CLI, verification included
    yield ckpt, out
    torch.set_num_threads(n)


def test_onnxruntime_matches_pytorch_at_batch_1_and_3(exported):
    ckpt, path = exported
    pred = Predictor.from_checkpoint(ckpt, device="cpu")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["images"] and [o.name for o in sess.get_outputs()] == ["probs"]
    assert not isinstance(sess.get_inputs()[0].shape[0], int)  # the batch axis is symbolic
    gen = torch.Generator().manual_seed(123)
    for b in (1, 3):
        x = torch.rand(b, 3, pred.height, pred.width, generator=gen)
        with torch.inference_mode():
            ref = pred.model(x).numpy()
        got = sess.run(None, {"images": x.numpy()})[0]
        assert got.shape == (b, len(ATTRS))
        np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)


def test_metadata_describes_the_model(exported):
    _, path = exported
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(meta["attr_names"]) == ATTRS and json.loads(meta["groups"]) == GROUPS
    assert (meta["input_height"], meta["input_width"]) == ("64", "32")


def test_verification_catches_a_different_model(exported):
    ckpt, path = exported
    pred = Predictor.from_checkpoint(ckpt, device="cpu")
    assert verify_onnx(pred.model, path, pred.height, pred.width) < 1e-4
    with torch.no_grad():
        pred.model.model.head.logits.bias += 1.0
    with pytest.raises(ExportError, match="differs from PyTorch by"):
        verify_onnx(pred.model, path, pred.height, pred.width)
