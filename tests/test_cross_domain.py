"""Cross-domain ``--mode eval`` (#23): a checkpoint scored on another dataset through an attribute map, in
both directions; oracles by hand (pairing, unions, mA / instance F1) and by NumPy from eval's own outputs."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from tests.conftest import REPO, tiny_opts
from tools.evaluation.cross_domain import cross_domain_metrics, pair_attributes, united
from tools.inference.contract import InferenceContract


def _contract(names: list[str]) -> InferenceContract:
    return InferenceContract(attr_names=names, groups=[], height=8, width=4, mean=[0.5] * 3, std=[0.5] * 3,
                             thresholds=[0.5] * len(names))


def _cfg(map_path) -> SimpleNamespace:
    return SimpleNamespace(TEST=SimpleNamespace(ATTR_MAP=str(map_path)))


def test_direction_follows_the_names(tmp_path):
    m = tmp_path / "m.yaml"
    m.write_text("map:\n  T: [p1, p2]\n  U: [p3]\n")
    # the checkpoint predicts the sources (a PETA model on NATIVE): decisions OR-ed per target
    rev = pair_attributes(_cfg(m), _contract(["p1", "p2", "p3"]), SimpleNamespace(attr_names=["U", "T"], name="D"))
    assert rev.direction == "decisions mapped" and rev.names == ["T", "U"]
    assert rev.pred_cols == [[0, 1], [2]] and rev.label_cols == [[1], [0]]
    # the dataset holds the sources (a NATIVE model on PETA): labels united per target the checkpoint has
    fwd = pair_attributes(_cfg(m), _contract(["U", "X"]), SimpleNamespace(attr_names=["p3", "p2", "p1"], name="D"))
    assert fwd.direction == "labels mapped" and fwd.names == ["U"] and fwd.pred_cols == [[0]]
    assert fwd.label_cols == [[0]]
    from configs.errors import ConfigError

    with pytest.raises(ConfigError, match="neither all of"):
        pair_attributes(_cfg(m), _contract(["p1"]), SimpleNamespace(attr_names=["p2", "p3"], name="D"))


def test_union_and_metrics_by_hand(tmp_path):
    """Decisions p1 [1,0,0,0], p2 [0,1,0,0], p3 [1,1,0,0] -> T = p1 or p2 = [1,1,0,0], U = p3 = [1,1,0,0].
    Labels T [1,0,1,0]: TP, FP, FN, TN -> mA_T .5; U [1,1,?,0]: R+ 1, R- 1 -> 1; mA .75.
    Instance: s0 P 1 R 1; s1 P 1/2 R 1; s2 (gt {T}, pred {}) 0, 0; s3 (nothing) 0, 0 ->
    P .375, R .5, F1 = .75 / 1.75."""
    m = tmp_path / "m.yaml"
    m.write_text("map:\n  T: [p1, p2]\n  U: [p3]\n")
    pairing = pair_attributes(_cfg(m), _contract(["p1", "p2", "p3"]), SimpleNamespace(attr_names=["T", "U"], name="D"))
    decisions = np.array([[1, 0, 1], [0, 1, 1], [0, 0, 0], [0, 0, 0]], float)
    labels = np.array([[1, 1], [0, 1], [1, -1], [0, 0]], float)
    out = cross_domain_metrics(decisions, labels, pairing)
    assert out["ma"] == pytest.approx(0.75) and out["instance_f1"] == pytest.approx(0.75 / 1.75)
    assert out["attributes"]["T"]["ma"] == 0.5 and out["attributes"]["U"]["predicted_rate"] == 0.5
    # a union of labels: 1 where any is 1, 0 where all are 0, else unknown
    assert united(np.array([[0, -1], [1, -1], [0, 0]]), [[0, 1]]).ravel().tolist() == [-1, 1, 0]


def test_eval_on_another_dataset_through_a_map(tmp_path):
    """A SYNTH model scored on SYNTH relabelled by a map {Hat: [Hat, Bag]} (labels mapped): the figures
    equal NumPy's from --mode eval's own probabilities on the same images."""
    import run

    demo = str(REPO / "configs" / "demo.yaml")
    opts = tiny_opts(tmp_path, NAME="x", **{"DATASET.SYNTH_SIZE": "120"})
    assert run.main(["--config-file", demo, *opts]) == 0
    assert run.main(["--config-file", demo, "--mode", "eval", *opts, "TEST.SPLIT", "all"]) == 0
    other = tmp_path / "other.yaml"
    other.write_text(f"DATASET:\n  NAME: SYNTH\n  ROOT: {tmp_path / 'synth'}\n  SYNTH_SIZE: 120\n")
    amap = tmp_path / "hat.yaml"
    amap.write_text("map:\n  Hat: [Hat, Bag]\n")
    args = ["--mode", "eval", *opts, "TEST.SPLIT", "all", "TEST.DATASET", str(other), "TEST.ATTR_MAP", str(amap)]
    assert run.main(["--config-file", demo, *args, "TEST.SUBSET", "synth"]) == 0
    exp = tmp_path / "exp" / "SYNTH" / "x"
    out = json.loads((exp / "eval_cross_SYNTH_synth_all.json").read_text())
    z = np.load(exp / "eval_all_predictions.npz")
    names = list(z["attr_names"])
    pred = z["probs"][:, names.index("Hat")] > 0.5
    y = z["labels"]
    gt = (y[:, names.index("Hat")] == 1) | (y[:, names.index("Bag")] == 1)
    ma = ((pred & gt).sum() / gt.sum() + (~pred & ~gt).sum() / (~gt).sum()) / 2
    assert out["direction"] == "labels mapped" and out["n_attrs_paired"] == 1 and out["n_images"] == 120
    assert out["ma"] == pytest.approx(ma, abs=1e-12)
    from configs.errors import ConfigError

    with pytest.raises(ConfigError, match="TEST.SUBSET = 'TownCentre': no image"):  # a one-line user error
        run.main(["--config-file", demo, *args, "TEST.SUBSET", "TownCentre"])


def test_a_model_pretrained_on_the_dataset_is_scored_on_its_pretraining_split_only(tmp_path):
    """RELOAD from a PETA run + TEST.DATASET PETA: the pretraining's saved config gives the split (the shipped
    configs/peta.yaml's PETA.mat partition would hold its training images), and a split other than test/val stops."""
    from configs import load_config
    from configs.errors import ConfigError
    from tools.evaluation.cross_domain import pretraining_config

    cfg = load_config(REPO / "configs" / "native_from_peta.yaml",
                      ["OUTPUT_DIR", str(tmp_path), "TEST.DATASET", "PETA", "TEST.SPLIT", "all"])
    with pytest.raises(ConfigError, match="TEST.SPLIT all would score its training images: use TEST.SPLIT test"):
        pretraining_config(cfg)
    cfg.defrost()
    cfg.TEST.SPLIT = "test"
    with pytest.raises(ConfigError, match="config.yaml is missing"):
        pretraining_config(cfg)
    saved = tmp_path / "PETA" / "lite0_peta" / "config.yaml"
    saved.parent.mkdir(parents=True)
    saved.write_text((REPO / "configs" / "peta_lite.yaml").read_text())
    assert pretraining_config(cfg) == saved
    cfg.TEST.DATASET = "PA100k"  # another dataset than the pretraining's: the named config as before
    assert pretraining_config(cfg) is None
