"""One inference contract: ``--mode eval``, ``--mode predict``, the Python predictor and ONNX give exactly
what training reported, for a package-weights model (mean/std 0.5, not ImageNet's) and for a post-hoc
logit-adjusted model decoded with group arg-max.

The oracles are independent of the code under test: the metrics training wrote at its best epoch, a
hand-written PIL + NumPy preprocessing with the package's documented normalisation, and the post-hoc
adjustment and mA recomputed with NumPy from the labels."""
from __future__ import annotations

import csv
import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import REPO, tiny_opts

DEMO = str(REPO / "configs" / "demo.yaml")
PACKAGE = {"MODEL.NAME": "timm", "MODEL.BACKBONE": "efficientnet_lite0", "MODEL.PRETRAINED": "package:efficientnet-lite0",
           "TRAIN.MAX_EPOCH": "2", "DATASET.SYNTH_SIZE": "120"}
POSTHOC = {"LOSS.LA_MODE": "posthoc", "LOSS.LA_TAU": "1.0", "METRIC.GROUP_ARGMAX": "True", "TRAIN.MAX_EPOCH": "2",
           "DATASET.SYNTH_SIZE": "120"}


def _run(*args: str) -> None:
    import run

    assert run.main(["--config-file", DEMO, *args]) == 0


@pytest.fixture(scope="module", params=["package", "posthoc"])
def trained(request, tmp_path_factory):
    """A finished run, then ``--mode eval TEST.SPLIT val`` on its best_model.pth."""
    tmp = tmp_path_factory.mktemp(request.param)
    opts = tiny_opts(tmp, NAME=request.param, **(PACKAGE if request.param == "package" else POSTHOC))
    _run(*opts)
    _run("--mode", "eval", *opts, "TEST.SPLIT", "val")
    exp = tmp / "exp" / "SYNTH" / request.param
    return {"kind": request.param, "exp": exp, "opts": opts, "tmp": tmp}


def _val_files(t) -> tuple[list, np.ndarray, np.ndarray]:
    """The val images in eval's order, with eval's per-image probabilities and labels."""
    from configs import load_config
    from dataset import build_data

    z = np.load(t["exp"] / "eval_val_predictions.npz")
    data = build_data(load_config(DEMO, t["opts"]))
    return [data.image_paths[i] for i in z["rows"]], z["probs"], z["labels"]


def test_eval_reproduces_the_training_time_best_epoch_metrics(trained):
    best = json.loads((trained["exp"] / "best_metrics.json").read_text())["val"]
    ev = json.loads((trained["exp"] / "eval_val.json").read_text())
    assert ev["same_split_as_training"] is True
    for k in ("ma", "ma_rethinking", "mean_acc", "instance_f1", "mean_f1"):
        assert abs(ev[k] - best[k]) <= 1e-6, (k, ev[k], best[k])
    assert ev["n_attrs_evaluated"] == best["n_attrs_evaluated"]


def test_predictor_and_predict_mode_give_evals_probabilities_exactly(trained):
    from tools.inference import Predictor

    files, probs, _ = _val_files(trained)
    pred = Predictor.from_checkpoint(trained["exp"] / "best_model.pth", device="cpu", batch_size=128)
    np.testing.assert_array_equal(pred.predict_images(files), probs)
    # in-memory crops go through the same preprocessing as files
    rgb = [np.asarray(Image.open(f).convert("RGB")) for f in files]
    np.testing.assert_array_equal(pred.predict_images(rgb), probs)

    folder = trained["tmp"] / "crops"
    folder.mkdir(exist_ok=True)
    for i, f in enumerate(files):  # sorted names keep eval's order
        (folder / f"{i:04d}{f.suffix}").write_bytes(f.read_bytes())
    out = trained["tmp"] / "pred.csv"
    _run("--mode", "predict", *trained["opts"], "TEST.PREDICT_PATH", str(folder), "TEST.PREDICT_CSV", str(out))
    with open(out, newline="") as fh:
        rows = list(csv.reader(fh))[1:]
    got = np.asarray([[np.float32(v) for v in r[2:]] for r in rows], np.float32)
    np.testing.assert_array_equal(got, probs)


def _reference_logits(net, files, height: int, width: int, mean, std) -> torch.Tensor:
    """Hand-written preprocessing: PIL bilinear resize, /255, (x - mean) / std; then the bare layers."""
    x = np.stack([np.asarray(Image.open(f).convert("RGB").resize((width, height), Image.BILINEAR), np.float32)
                  for f in files]) / 255.0
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    t = torch.from_numpy(x.astype(np.float32)).permute(0, 3, 1, 2).contiguous()
    with torch.inference_mode():
        return net.head(net.backbone(t))


def test_probabilities_match_a_hand_written_pipeline(trained):
    from configs import load_config
    from dataset import build_data
    from tools.inference import load_for_inference

    files, probs, _ = _val_files(trained)
    loaded = load_for_inference(trained["exp"] / "best_model.pth")
    h, w = 64, 32
    if trained["kind"] == "package":  # efficientnet-lite0's package weights expect (x - 0.5) / 0.5
        assert loaded.contract.mean == pytest.approx([0.5] * 3) and loaded.contract.std == pytest.approx([0.5] * 3)
        z = _reference_logits(loaded.net, files, h, w, [0.5] * 3, [0.5] * 3).numpy().astype(np.float64)
        expected = 1 / (1 + np.exp(-z))
    else:  # ImageNet statistics, and the post-hoc adjustment with the train split's priors
        z = _reference_logits(loaded.net, files, h, w, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)).numpy()
        data = build_data(load_config(DEMO, trained["opts"]))
        y = data.labels[data.splits["train"]]
        pi = np.clip(((y == 1) & (y >= 0)).sum(0) / np.maximum((y >= 0).sum(0), 1), 1e-4, 1 - 1e-4)
        expected = 1 / (1 + np.exp(-(z.astype(np.float64) - np.log(pi / (1 - pi)))))
    np.testing.assert_allclose(probs, expected, atol=2e-5, rtol=0)


def test_metrics_are_recomputed_from_the_per_image_probabilities(trained):
    """mA by hand (NumPy) from eval's probabilities: group arg-max for the posthoc run, threshold 0.5."""
    from configs import load_config
    from dataset import build_data

    _, probs, labels = _val_files(trained)
    decided = probs.copy()
    if trained["kind"] == "posthoc":
        data = build_data(load_config(DEMO, trained["opts"]))
        for g in data.groups:
            idx = [data.attr_names.index(a) for a in g.attrs]
            top = np.asarray(idx)[probs[:, idx].argmax(1)]
            decided[:, idx] = 0.0
            decided[np.arange(len(probs)), top] = 1.0
    pred = decided > 0.5  # the rule: strictly above the threshold
    pos, neg = labels == 1, labels == 0
    rec_p = (pred & pos).sum(0) / np.where(pos.sum(0) > 0, pos.sum(0), np.nan)
    rec_n = (~pred & neg).sum(0) / np.where(neg.sum(0) > 0, neg.sum(0), np.nan)
    ma = np.nanmean((rec_p + rec_n) / 2)
    ev = json.loads((trained["exp"] / "eval_val.json").read_text())
    assert ev["ma"] == pytest.approx(ma, abs=1e-9)


def test_onnx_computes_what_the_predictor_returns(trained):
    ort = pytest.importorskip("onnxruntime")
    from scripts.export_onnx import main as export
    from tools.inference import Predictor

    files, probs, _ = _val_files(trained)
    out = export(["--checkpoint", str(trained["exp"] / "best_model.pth"), "--out", str(trained["tmp"] / "m.onnx")])
    pred = Predictor.from_checkpoint(trained["exp"] / "best_model.pth", device="cpu")
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = sess.run(["probs"], {"images": pred.preprocess(files[:8]).numpy()})[0]
    np.testing.assert_allclose(got, probs[:8], atol=1e-4, rtol=0)


def test_onnx_runtime_predictor_matches_eval_and_reexports_only_a_changed_checkpoint(trained, tmp_path, caplog):
    pytest.importorskip("onnxruntime")
    import shutil

    from tools.inference import Predictor
    from tools.inference.onnx import OnnxPredictor, runtime_predictor

    files, probs, _ = _val_files(trained)
    ckpt = tmp_path / "best_model.pth"
    shutil.copy(trained["exp"] / "best_model.pth", ckpt)
    torch_pred = Predictor.from_checkpoint(ckpt, device="cpu")
    assert runtime_predictor(torch_pred, "torch") is torch_pred
    fast = runtime_predictor(torch_pred, "auto")
    assert isinstance(fast, OnnxPredictor) and fast.onnx_path == tmp_path / "best_model.onnx"
    np.testing.assert_allclose(fast.predict_images(files), probs, atol=1e-4, rtol=0)
    np.testing.assert_array_equal(fast.decoder.thresholds, torch_pred.decoder.thresholds)
    stamp = fast.onnx_path.stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="tools.inference.onnx"):
        again = runtime_predictor(Predictor.from_checkpoint(ckpt, device="cpu"), "onnx")
    assert again.onnx_path.stat().st_mtime_ns == stamp and "reusing" in caplog.text
    blob = torch.load(ckpt, map_location="cpu", weights_only=False)  # a retrained checkpoint: new weights
    key = next(k for k, v in blob["model"].items() if v.dtype == torch.float32 and v.dim() == 2)
    blob["model"][key] = blob["model"][key] * 0.5
    torch.save(blob, ckpt)
    fresh = runtime_predictor(Predictor.from_checkpoint(ckpt, device="cpu"), "onnx")
    np.testing.assert_allclose(fresh.predict_images(files[:4]),
                               Predictor.from_checkpoint(ckpt, device="cpu").predict_images(files[:4]), atol=1e-4)
    assert not np.allclose(fresh.predict_images(files[:4]), probs[:4], atol=1e-4)


def test_a_checkpoint_without_a_contract_loads_with_a_warning_and_a_guess(trained, caplog):
    if trained["kind"] != "package":
        pytest.skip("the guess matters for package weights (mean/std 0.5)")
    from tools.checkpoint import load_checkpoint, save_checkpoint
    from tools.inference import Predictor

    ck = load_checkpoint(trained["exp"] / "best_model.pth")
    ck.pop("contract")
    old = save_checkpoint(ck, trained["tmp"] / "old.pth")
    files, probs, _ = _val_files(trained)
    with caplog.at_level(logging.WARNING):
        pred = Predictor.from_checkpoint(old, device="cpu", batch_size=128)
    assert "no inference contract" in caplog.text
    assert pred.contract.mean == pytest.approx([0.5] * 3)
    # a guess: the memory format training used (channels_last here) is not known, so kernels may differ
    # in the last float bits
    np.testing.assert_allclose(pred.predict_images(files), probs, atol=1e-6, rtol=0)


def test_eval_warns_when_the_split_is_not_the_one_trained_with(trained, caplog):
    from configs import load_config
    from dataset import build_data
    from tools.evaluation.evaluator import check_fingerprint
    from tools.inference import load_for_inference

    contract = load_for_inference(trained["exp"] / "best_model.pth").contract
    data = build_data(load_config(DEMO, trained["opts"]))
    assert check_fingerprint(contract, data, "val")
    data.splits["val"] = data.splits["val"][1:]
    with caplog.at_level(logging.WARNING):
        assert not check_fingerprint(contract, data, "val")
    assert "differs from the val split this model was trained with" in caplog.text


def test_label_decoder_follows_group_argmax_and_per_attribute_thresholds():
    from tools.inference.labels import LabelDecoder

    names = ["U_red", "U_blue", "Hat"]
    groups = [["upper", "exclusive", "U_red", "U_blue"]]
    p = np.array([0.4, 0.3, 0.55])
    assert LabelDecoder(names, groups, 0.5, group_argmax=True).decode(p)["upper"] == "U_red"
    assert LabelDecoder(names, groups, 0.5, group_argmax=False).decode(p)["upper"] == "none"
    assert LabelDecoder(names, groups, [0.35, 0.5, 0.5], group_argmax=False).decode(p)["upper"] == "U_red"
    assert LabelDecoder(names, groups, [0.5, 0.5, 0.6]).decode(p)["present"] == []
    assert LabelDecoder(names, groups, [0.5, 0.5, 0.5]).decode(p)["present"] == ["Hat"]


def test_retrieval_command_and_search_mode_run_on_the_checkpoint(trained, capsys):
    if trained["kind"] != "package":
        pytest.skip("one checkpoint is enough")
    from scripts.retrieval_eval import main as retrieval

    cfg_args = ["--config-file", DEMO, *trained["opts"], "TEST.SPLIT", "val"]
    m = retrieval(cfg_args)
    assert 0 <= m["retrieval_mAP"] <= 1 and m["retrieval_queries"] >= 1
    assert "retrieval mAP" in capsys.readouterr().out
    assert (trained["exp"] / "retrieval_val.json").is_file()

    files, _, _ = _val_files(trained)
    folder = trained["tmp"] / "search_crops"
    folder.mkdir(exist_ok=True)
    for f in files[:6]:
        (folder / f.name).write_bytes(f.read_bytes())
    out = trained["tmp"] / "search_out"
    _run("--mode", "search", *trained["opts"], "SEARCH.QUERY", "upper_colour=red", "SEARCH.IN", str(folder),
         "SEARCH.OUTPUT", str(out))
    found = sorted(out.glob("*/search.csv"))  # a new folder per query under SEARCH.OUTPUT
    assert len(found) == 1 and (found[0].parent / "search.json").is_file()
