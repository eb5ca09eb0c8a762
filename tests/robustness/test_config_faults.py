"""Config mistakes: one line naming the key and the fix, before any heavy work (no data read, no model)."""
from __future__ import annotations

import sys

import pytest

from configs import ConfigError
from tests.robustness._helpers import load, run_cli, the_error_line, tiny_yaml, write_yaml
from tools.engine import trainer as engine_trainer


def _one_line_error(proc) -> str:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    return lines[0]


def test_unknown_key_subprocess_one_line_with_suggestion(tmp_path, synth_root):
    cfg_file = tiny_yaml(tmp_path, synth_root, **{"TRAIN.BATCH_SIZ": 32})
    line = _one_line_error(run_cli(["--config-file", str(cfg_file)]))
    assert line == (f"error: unknown config key 'TRAIN.BATCH_SIZ' ({cfg_file}); did you mean 'TRAIN.BATCH_SIZE'?")


def test_wrong_type_subprocess_in_yaml_and_on_the_command_line(tmp_path, synth_root):
    cfg_file = tiny_yaml(tmp_path, synth_root, **{"TRAIN.BATCH_SIZE": "32"})
    line = _one_line_error(run_cli(["--config-file", str(cfg_file)]))
    assert line == f"error: TRAIN.BATCH_SIZE must be int, got str '32' ({cfg_file}); e.g. TRAIN.BATCH_SIZE: 64"
    with pytest.raises(ConfigError, match=r"TRAIN.MAX_EPOCH must be int, got str 'five' \(command line\)"):
        load(tiny_yaml(tmp_path, synth_root), "TRAIN.MAX_EPOCH", "five")


@pytest.mark.parametrize("overrides, message", [
    ({"DATASET.TRAIN_NATIVE_SPLIT": 0.8, "DATASET.VAL_NATIVE_SPLIT": 0.2},
     "DATASET.TRAIN/VAL/TEST_NATIVE_SPLIT must be >= 0 and sum to at most 1, got (0.8, 0.2, 0.15) (sum 1.150); "
     "lower one of them"),
    ({"DATASET.ATTRS": ["Hat", "Bag"], "DATASET.GROUPS": [["carry", "optional", "Bag", "Backpack"]]},
     "DATASET.GROUPS group 'carry' names unknown attribute(s) ['Backpack']; each must be listed in DATASET.ATTRS"),
    ({"DATASET.GROUPS": [["carry", "sometimes", "Bag", "Hat"]]},
     "DATASET.GROUPS entry ['carry', 'sometimes', 'Bag', 'Hat'] must be [name, kind, attr, attr, ...]"),
    ({"TRAIN.ON_NONFINITE": "ignore"}, "TRAIN.ON_NONFINITE = 'ignore' is not one of 'stop', 'skip'"),
    ({"DATASET.ON_BAD_IMAGE": "drop"}, "DATASET.ON_BAD_IMAGE = 'drop' is not one of 'skip', 'error'"),
    ({"TRAIN.BATCH_SIZE": 0}, "TRAIN.BATCH_SIZE must be positive, got 0"),
    ({"DATASET.ATTRS": ["Hat", "Hat"]}, "DATASET.ATTRS lists ['Hat'] more than once; keep one of each"),
])
def test_invalid_values_are_refused_by_the_loader(tmp_path, synth_root, overrides, message):
    with pytest.raises(ConfigError) as e:
        load(tiny_yaml(tmp_path, synth_root, **overrides))
    assert message in str(e.value)


def test_unreadable_config_files(tmp_path):
    with pytest.raises(ConfigError, match=r"config file not found: .*nope.yaml \(pass an existing YAML"):
        load(tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("TRAIN:\n  BATCH_SIZE: [16\n")
    with pytest.raises(ConfigError, match=r"broken.yaml is not valid YAML"):
        load(broken)
    with pytest.raises(ConfigError, match=r"overrides come in KEY VALUE pairs; 'TRAIN.MAX_EPOCH' has no value"):
        load(write_yaml(tmp_path / "ok.yaml", {}), "TRAIN.MAX_EPOCH")
    with pytest.raises(ConfigError, match=r"TRAIN is a section; give it KEY: value entries"):
        load(write_yaml(tmp_path / "flat.yaml", {"TRAIN": 5}))


@pytest.fixture
def no_heavy_work(monkeypatch):
    """Fail the test if training gets as far as building a model."""
    def refuse(*a, **kw):
        raise AssertionError("a model was built before the data path was checked")

    monkeypatch.setattr(engine_trainer, "build_model", refuse)


@pytest.mark.parametrize("overrides, message", [
    ({"DATASET.NAME": "NATIVE", "DATASET.IMAGE_PATH": "/no/such/images", "DATASET.NATIVE_EXCEL": "/no/such.xlsx"},
     "error: image folder not found: /no/such/images (set DATASET.IMAGE_PATH"),
    ({"DATASET.NAME": "NATIVE", "DATASET.IMAGE_PATH": "{tmp}", "DATASET.NATIVE_EXCEL": "/no/such.xlsx"},
     "error: label sheet not found: /no/such.xlsx (set DATASET.NATIVE_EXCEL"),
    ({"DATASET.NAME": "PA100k", "DATASET.ROOT": ""}, "error: DATASET.ROOT is empty; point it at the PA100k folder"),
    ({"DATASET.NAME": "PETA", "DATASET.ROOT": "/no/such/peta"}, "error: DATASET.ROOT = '/no/such/peta' is not a folder"),
    ({"DATASET.GROUPS": [["hat", "optional", "Hat", "Cap"]]},
     "error: SYNTH: group 'hat' names unknown attribute(s) ['Cap']; fix DATASET.GROUPS (attributes: U_red,"),
])
def test_missing_data_paths_fail_in_one_line_before_a_model_is_built(tmp_path, synth_root, overrides, message,
                                                                     no_heavy_work, monkeypatch, capsys):
    import run

    overrides = {k: (v.format(tmp=tmp_path) if isinstance(v, str) else v) for k, v in overrides.items()}
    cfg_file = tiny_yaml(tmp_path, synth_root, **overrides)
    monkeypatch.setattr(sys, "argv", ["run.py", "--config-file", str(cfg_file)])
    assert run.cli() == 2
    assert the_error_line(capsys.readouterr().err).startswith(message)
