"""Fidelity details of #23: the threshold rule (Rethinking_of_PAR's strict ``>``) everywhere a label is
decided, and GOAT's reset period (the original's 50) by default."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from configs import get_cfg_defaults, load_config
from tools.evaluation.metrics import compute_metrics, predicted_positive
from tools.inference.labels import LabelDecoder

REPO = Path(__file__).resolve().parents[1]


def test_a_probability_equal_to_the_threshold_is_negative():
    # Rethinking_of_PAR: pred_label = preds_probs > threshold
    assert predicted_positive(np.array([0.5, 0.5000001, 0.4999999]), 0.5).tolist() == [False, True, False]
    labels = np.array([[1], [0]])
    probs = np.array([[0.5], [0.5]])
    m = compute_metrics(probs, labels, 0.5)  # both predicted negative: R+ = 0/1, R- = 1/1
    assert m["per_attr"]["pos_recall"][0] == 0.0 and m["per_attr"]["neg_recall"][0] == 1.0 and m["ma"] == 0.5
    # per-attribute thresholds: 0.3 is exactly attribute 0's threshold (negative), above attribute 1's
    m = compute_metrics(np.array([[0.3, 0.3]]), np.array([[1, 1]]), np.array([0.3, 0.2]))
    assert m["per_attr"]["pos_recall"].tolist() == [0.0, 1.0]


def test_label_decoder_uses_the_same_rule():
    names = ["Gender_female", "Hat", "U_red", "U_blue"]
    groups = [["upper", "optional", "U_red", "U_blue"]]
    dec = LabelDecoder(names, groups, [0.5, 0.4, 0.6, 0.5], group_argmax=False)
    out = dec.decode(np.array([0.5, 0.4, 0.6, 0.1]))  # each probability exactly its threshold
    assert out["Gender_female"] == "male" and out["present"] == [] and out["upper"] == "none"
    out = dec.decode(np.array([0.51, 0.41, 0.61, 0.1]))
    assert out["Gender_female"] == "female" and out["present"] == ["Hat"] and out["upper"] == "U_red"


def test_goat_resets_every_50_steps_by_default():
    from tools.engine.stage2 import Stage2Options
    from batch_engine import StepOptions
    import torch

    assert get_cfg_defaults().STAGE2.RESET_EVERY == 50
    assert Stage2Options(StepOptions(device=torch.device("cpu"))).reset_every == 50
    for name in ("native_frdl.yaml", "peta_frdl.yaml", "native_frdl_from_peta.yaml"):
        assert load_config(REPO / "configs" / name).STAGE2.RESET_EVERY == 50, name


def test_reset_period_is_validated():
    from configs.errors import ConfigError

    with pytest.raises(ConfigError, match="RESET_EVERY >= 1"):
        load_config(REPO / "configs" / "native_frdl.yaml", ["STAGE2.RESET_EVERY", "0"])
