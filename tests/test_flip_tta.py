"""TEST.FLIP (crop and mirror averaged) as part of the inference contract: training selects and decides with
it, ``--mode eval`` / the predictor / ONNX reproduce it, an eval of an unflipped checkpoint can ask for it
(and says so), and ReID embeddings average the same way.

Oracles: the bare layers run by hand on the crops and on ``torch.flip`` of them, averaged with NumPy."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from tests.conftest import REPO, tiny_opts

DEMO = str(REPO / "configs" / "demo.yaml")


def _run(*args: str) -> None:
    import run

    assert run.main(["--config-file", DEMO, *args]) == 0


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two tiny runs on the same data: trained with TEST.FLIP True and without."""
    tmp = tmp_path_factory.mktemp("flip")
    out = {}
    for name, flip in (("flip", "True"), ("plain", "False")):
        opts = tiny_opts(tmp, NAME=name, **{"TEST.FLIP": flip, "LOSS.LA_MODE": "posthoc", "METRIC.DECISION": "tau_joint"})
        _run(*opts)
        out[name] = {"exp": tmp / "exp" / "SYNTH" / name, "opts": opts}
    return out


def _val_images(run: dict) -> tuple[list, np.ndarray, np.ndarray]:
    from configs import load_config
    from dataset import build_data

    z = np.load(run["exp"] / "eval_val_predictions.npz")
    data = build_data(load_config(DEMO, run["opts"]))
    return [data.image_paths[i] for i in z["rows"]], z["probs"], z["labels"]


def _hand_probs(loaded, x: torch.Tensor) -> np.ndarray:
    """sigmoid(mean of the bare network's logits on x and on its mirror, post-hoc adjusted) by hand."""
    from models.tta import unwrapped

    net = unwrapped(loaded.net)
    with torch.inference_mode():
        z = ((net(x) + net(torch.flip(x, dims=[3]))) / 2).numpy().astype(np.float64)
    c = loaded.contract
    pi = np.asarray(c.priors, np.float64)
    z = z - c.la_tau * np.log(pi / (1 - pi))
    return 1 / (1 + np.exp(-z))


def test_a_flip_trained_checkpoint_carries_it_and_eval_reproduces_training(runs):
    from tools.inference import Predictor, load_for_inference

    r = runs["flip"]
    _run("--mode", "eval", *r["opts"], "TEST.SPLIT", "val")
    loaded = load_for_inference(r["exp"] / "best_model.pth")
    assert loaded.contract.flip is True
    best = json.loads((r["exp"] / "best_metrics.json").read_text())["val"]
    ev = json.loads((r["exp"] / "eval_val.json").read_text())
    assert ev["flip"] is True
    for k in ("ma", "instance_f1", "mean_f1"):
        assert ev[k] == pytest.approx(best[k], abs=1e-6), k
    files, probs, _ = _val_images(r)
    pred = Predictor(loaded)
    x = pred.preprocess(files)
    np.testing.assert_allclose(probs, _hand_probs(loaded, x), atol=2e-5, rtol=0)
    np.testing.assert_array_equal(pred.predict_images(files), probs)


def test_asking_eval_for_the_flip_on_an_unflipped_checkpoint_scores_with_it_and_says_so(runs, caplog):
    from tools.inference import Predictor, load_for_inference

    r = runs["plain"]
    _run("--mode", "eval", *r["opts"], "TEST.SPLIT", "val")
    files, plain, _ = _val_images(r)
    assert json.loads((r["exp"] / "eval_val.json").read_text())["flip"] is False
    with caplog.at_level(logging.WARNING):
        _run("--mode", "eval", *r["opts"], "TEST.SPLIT", "val", "TEST.FLIP", "True")
    assert "trained without the flip" in caplog.text
    assert json.loads((r["exp"] / "eval_val.json").read_text())["flip"] is True
    _, flipped, _ = _val_images(r)
    loaded = load_for_inference(r["exp"] / "best_model.pth")
    assert loaded.contract.flip is False
    x = Predictor(loaded).preprocess(files)
    np.testing.assert_allclose(flipped, _hand_probs(loaded, x), atol=2e-5, rtol=0)
    assert np.abs(flipped - plain).max() > 1e-4  # the mirror is a different look, not a no-op


def test_onnx_export_of_a_flip_checkpoint_computes_the_average(runs, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from scripts.export_onnx import main as export
    from tools.inference import Predictor, load_for_inference

    r = runs["flip"]
    out = export(["--checkpoint", str(r["exp"] / "best_model.pth"), "--out", str(tmp_path / "m.onnx")])
    loaded = load_for_inference(r["exp"] / "best_model.pth")
    x = Predictor(loaded).preprocess([np.random.default_rng(0).integers(0, 255, (90, 40, 3), np.uint8)
                                      for _ in range(5)])
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(["probs"], {"images": x.numpy()})[0], _hand_probs(loaded, x), atol=1e-4,
                               rtol=0)


def test_flip_averaging_of_embeddings_dicts_and_tuples():
    from models.tta import FlipAveraged, flip_averaged, unwrapped

    class Net(torch.nn.Module):  # left-right asymmetric on purpose: a column ramp weights the pixels
        def __init__(self):
            super().__init__()
            self.w = torch.linspace(-1, 2, 8)

        def embed(self, x):
            return (x * self.w).sum(dim=(2, 3))

        def forward(self, x):
            e = self.embed(x)
            return {"bn_feat": e, "feat": 2 * e}

        def attrs_and_embed(self, x):
            e = self.embed(x)
            return e[:, :1], e

    x = torch.rand(4, 3, 6, 8)
    net = Net()
    m = flip_averaged(net, True)
    want = ((net.embed(x) + net.embed(x.flip(-1))) / 2)
    torch.testing.assert_close(m.embed(x), want)
    torch.testing.assert_close(m(x)["feat"], 2 * want)
    a, e = m.attrs_and_embed(x)
    torch.testing.assert_close(a, want[:, :1])
    torch.testing.assert_close(e, want)
    assert not torch.allclose(want, net.embed(x))  # the ramp makes the mirror differ
    sym = torch.cat([x[..., :4], x[..., :4].flip(-1)], dim=-1)  # a mirror-symmetric crop: the average is itself
    torch.testing.assert_close(m.embed(sym), net.embed(sym))
    assert flip_averaged(net, False) is net and flip_averaged(m, True) is m and unwrapped(m) is net
    assert isinstance(m, FlipAveraged)
    assert hasattr(m, "embed") and not hasattr(m, "forward_features")  # it offers what the network has


def test_a_reid_run_with_the_flip_selects_and_evaluates_on_averaged_embeddings(tmp_path):
    import run
    from tests.test_reid_training import MARKET_YAML, exp_of, overrides, write_market
    from tools.inference import load_for_inference

    root = write_market(tmp_path / "Market-1501", range(1, 13), range(13, 17))
    opts = ["--config-file", str(MARKET_YAML), "TASK", "reid", *overrides(root, tmp_path / "exp", **{"TEST.FLIP": True})]
    assert run.main(opts) == 0
    exp = exp_of(tmp_path / "exp")
    loaded = load_for_inference(exp / "best_model.pth")
    assert loaded.contract.flip is True
    x = torch.rand(3, 3, 64, 32)
    with torch.inference_mode():
        bare = loaded.net.model
        torch.testing.assert_close(loaded.model(x), (bare.embed(x) + bare.embed(x.flip(-1))) / 2)
    assert run.main(["--mode", "eval", *opts]) == 0
    got, best = json.loads((exp / "eval_reid.json").read_text()), json.loads((exp / "best_metrics.json").read_text())
    assert got["flip"] is True
    for tag in ("val", "test"):
        assert got[tag] == pytest.approx(best[tag], abs=1e-6)
