"""METRIC.DECISION (#23): per-attribute thresholds chosen on validation for mA, instance F1 or their
harmonic mean, carried by the checkpoint's contract; oracles computed by hand in the docstrings."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import REPO, tiny_opts
from tools.evaluation.decision import GRID, candidates, fit_thresholds, harmonic
from tools.evaluation.metrics import compute_metrics

S = 1 / (1 + np.exp(1.0))  # sigmoid(-1) = 0.26894: the grid point nearest 0.5 below 0.3

# Attribute A (rare, one positive) and B (predicted perfectly at 0.5); 6 images:
#   s0 gt {A, B}; s1..s4 gt {B}; s5 gt {}.  A's probabilities: .3 (s0), .35 (s1), .33 (s2), .1 (s3..s5).
LABELS = np.array([[1, 1], [0, 1], [0, 1], [0, 1], [0, 1], [0, 0]])
PROBS = np.array([[0.3, 0.9], [0.35, 0.9], [0.33, 0.9], [0.1, 0.9], [0.1, 0.9], [0.1, 0.1]])


def test_grid_and_tie_order():
    assert len(GRID) == 41 and GRID[20] == 0.5 and GRID[0] == pytest.approx(1 / (1 + np.exp(5)))
    c = candidates(0.5)
    assert c[0] == 0.5 and {c[1], c[2]} == {GRID[19], GRID[21]}


def test_ma_objective_by_hand():
    """A at t in [.1, .3): s0, s1, s2 positive: R+ 1, R- 3/5 -> mA_A .8 (t >= .35: .5; [.33, .35): .4;
    [.3, .33): .3; t < .1: .5); the grid points in [.1, .3) tie, the nearest 0.5 wins: sigmoid(-1).
    B: every t in [.1, .9) is perfect, 0.5 is kept."""
    t = fit_thresholds(PROBS, LABELS, "ma")
    assert t[0] == pytest.approx(S) and t[1] == 0.5
    one = fit_thresholds(np.array([[0.05], [0.1], [0.35], [0.3], [0.45]]), np.array([[0], [0], [0], [1], [1]]), "ma")
    assert one[0] == pytest.approx(S)  # [.1, .3): R+ 1, R- 2/3 = .833 beats [.35, .45): .75


def test_f1_objective_keeps_the_rare_attribute_off():
    """Instance F1 (mean precision / recall per image; an image with nothing true and nothing predicted
    counts 0 in both, as Rethinking_of_PAR):
    A off: P = (1 + 4) / 6, R = (.5 + 4) / 6 -> F1 = 2 x .8333 x .75 / 1.5833 = .78947
    A on for t in [.1, .3) (s0, s1, s2): P = (1 + .5 + .5 + 2) / 6 = .6667, R = 5 / 6 -> F1 = .74074: kept off."""
    t = fit_thresholds(PROBS, LABELS, "f1")
    assert t.tolist() == [0.5, 0.5]
    assert compute_metrics(PROBS, LABELS, t)["instance_f1"] == pytest.approx(2 * (5 / 6) * 0.75 / (5 / 6 + 0.75))


def test_joint_objective_is_the_harmonic_mean_by_hand():
    """A off: mA (.5 + 1) / 2 = .75, F1 .78947 -> H .76923; A on in [.1, .3): mA (.8 + 1) / 2 = .9,
    F1 .74074 -> H .81264 (the other ranges are lower): joint turns A on, F1 alone does not."""
    t = fit_thresholds(PROBS, LABELS, "joint")
    assert t[0] == pytest.approx(S) and t[1] == 0.5
    m = compute_metrics(PROBS, LABELS, t)
    f1 = 2 * (2 / 3) * (5 / 6) / (2 / 3 + 5 / 6)
    assert m["ma"] == pytest.approx(0.9) and m["instance_f1"] == pytest.approx(f1)
    assert float(harmonic(0.9, f1)) == pytest.approx(0.812641, abs=1e-6)
    assert float(harmonic(0.0, 0.0)) == 0.0


def test_attributes_without_both_labels_keep_the_start_threshold_and_unknowns_are_masked():
    labels = np.array([[0, 1], [0, -1], [0, 0]])  # attribute 0: no positive; attribute 1: one unknown
    probs = np.array([[0.9, 0.45], [0.2, 0.95], [0.3, 0.1]])
    t = fit_thresholds(probs, labels, "joint", t0=0.6)
    assert t[0] == 0.6
    # attribute 1 over its known labels (s0 positive at .45, s2 negative at .1): 0.6 misses s0; the ties in
    # [.1, .45) go to the grid point nearest 0.6 below .45: sigmoid(-0.25) = .4378
    assert t[1] == pytest.approx(1 / (1 + np.exp(0.25)))
    with pytest.raises(ValueError, match="not one of ma, f1, joint"):
        fit_thresholds(probs, labels, "threshold")


def test_decision_is_validated():
    from configs import load_config
    from configs.errors import ConfigError

    with pytest.raises(ConfigError, match="METRIC.DECISION"):
        load_config(REPO / "configs" / "demo.yaml", ["METRIC.DECISION", "best"])
    with pytest.raises(ConfigError, match="also DATASET.TEST_SPLIT"):  # fitted and reported on one split
        load_config(REPO / "configs" / "demo.yaml", ["METRIC.DECISION", "joint", "DATASET.VAL_SPLIT", "test"])
    with pytest.raises(ConfigError, match="METRIC.THRESHOLD"):
        load_config(REPO / "configs" / "demo.yaml", ["METRIC.THRESHOLD", "1.0"])


def test_the_checkpoint_ships_the_fitted_rule_and_eval_reproduces_best_metrics(tmp_path):
    """Training with METRIC.DECISION joint stores the val-fitted thresholds in the contract; --mode eval on
    the test split gives best_metrics.json's test figures exactly, and the label decoder uses them."""
    import run
    import torch

    from tools.inference import Predictor

    opts = tiny_opts(tmp_path, NAME="joint", **{"METRIC.DECISION": "joint", "DATASET.SYNTH_SIZE": "120"})
    demo = str(REPO / "configs" / "demo.yaml")
    assert run.main(["--config-file", demo, *opts]) == 0
    assert run.main(["--config-file", demo, "--mode", "eval", *opts, "TEST.SPLIT", "test"]) == 0
    exp = tmp_path / "exp" / "SYNTH" / "joint"
    contract = torch.load(exp / "best_model.pth", map_location="cpu", weights_only=False)["contract"]
    best, ev = json.loads((exp / "best_metrics.json").read_text())["test"], json.loads((exp / "eval_test.json").read_text())
    for k in ("ma", "instance_f1", "mean_acc", "ma_rethinking"):
        assert ev[k] == best[k], k
    z = np.load(exp / "predictions_best_val.npz")
    t0 = np.asarray(contract["thresholds"])
    assert np.allclose(t0, fit_thresholds(z["probs"], z["labels"], "joint"))  # refit from the saved predictions
    assert Predictor.from_checkpoint(exp / "best_model.pth", device="cpu").decoder.thresholds.tolist() == t0.tolist()


def test_tau_family_by_hand():
    """Prior 0.2: log-odds log(1/4), so tau's threshold is 1 / (1 + 4^tau) (tau 0: .5, tau 1: .2).
    Labels [1,1,0,0,0], probabilities [.25, .6, .1, .3, .05]: mA .75 while t > .3 (tau <= .6), .583 at
    tau .7 (t .275: s3 a false positive), .833 for tau .8 .. 1.5 (t .248 .. .111: s0 caught), then lower;
    the nearest 0 of the best taus is .8."""
    from tools.evaluation.decision import fit_tau, tau_thresholds

    lo = np.array([np.log(0.25)])
    probs = np.array([[0.25], [0.6], [0.1], [0.3], [0.05]])
    labels = np.array([[1], [1], [0], [0], [0]])
    tau, t = fit_tau(probs, labels, lo, "ma")
    assert tau == pytest.approx(0.8) and t[0] == pytest.approx(1 / (1 + 4 ** 0.8))
    assert fit_tau(probs, labels, lo, "joint")[0] == pytest.approx(0.8)
    assert tau_thresholds(lo, 1.0)[0] == pytest.approx(0.2) and tau_thresholds(lo, 1.0, tau0=1.0)[0] == 0.5


def test_decision_table_from_saved_predictions(tmp_path):
    """scripts.decision_table on a run folder written by hand: a contract shipping tau 1 (prior .2 for both
    attributes: the adjustment multiplies the odds by 4), its adjusted val / test probabilities."""
    import torch

    from scripts.decision_table import decision_table, markdown
    from tools.inference.contract import InferenceContract

    c = InferenceContract(attr_names=["A", "B"], groups=[], height=8, width=4, mean=[0.5] * 3, std=[0.5] * 3,
                          thresholds=[0.5, 0.5], la_tau=1.0, priors=[0.2, 0.2])
    torch.save({"contract": c.to_dict()}, tmp_path / "best_model.pth")
    raw = np.array([[0.25, 0.6], [0.6, 0.1], [0.1, 0.3], [0.3, 0.05]])  # tau 0 probabilities
    labels = np.array([[1, 1], [1, 0], [0, 1], [0, 0]], np.int8)
    odds = raw / (1 - raw) * 4  # tau 1: z - log(.2 / .8) = z + log 4
    shipped = odds / (1 + odds)  # [.571, .857], [.857, .308], [.308, .632], [.632, .174]
    for split in ("val", "test"):
        np.savez(tmp_path / f"predictions_best_{split}.npz", probs=shipped.astype(np.float32), labels=labels,
                 attr_names=np.array(["A", "B"]), rows=np.arange(4))
    rows = {r["rule"]: r for r in decision_table(tmp_path)}
    # threshold 0.5 on the raw probabilities: A [0,1,0,0] vs [1,1,0,0] -> mA .75; B [1,0,0,0] vs [1,0,1,0] -> .75
    assert rows["threshold 0.5"]["test_ma"] == pytest.approx(0.75)
    # tau 1 = what the contract ships: A [1,1,0,1] -> (1 + 1/2) / 2; B [1,0,1,0] -> 1
    assert rows["tau 1"]["test_ma"] == pytest.approx((0.75 + 1.0) / 2) == rows["shipped (contract)"]["test_ma"]
    assert "| rule | val mA | val F1 | val H | test mA |" in markdown(list(rows.values()))
