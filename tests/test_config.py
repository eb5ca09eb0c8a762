from pathlib import Path

import pytest

from configs import ConfigError, load_config

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_unknown_yaml_key_names_it_and_the_closest_key(tmp_path):
    p = write(tmp_path, "bad.yaml", "TRAIN:\n  BATCH_SZE: 8\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert "TRAIN.BATCH_SZE" in str(e.value) and "TRAIN.BATCH_SIZE" in str(e.value)


def test_key_in_wrong_section_suggests_the_right_one(tmp_path):
    p = write(tmp_path, "bad.yaml", "MODEL:\n  MAX_EPOCH: 3\n")
    with pytest.raises(ConfigError, match="TRAIN.MAX_EPOCH"):
        load_config(p)


def test_wrong_type_is_refused_with_the_key(tmp_path):
    p = write(tmp_path, "bad.yaml", 'TRAIN:\n  BATCH_SIZE: "32"\n')
    with pytest.raises(ConfigError, match=r"TRAIN.BATCH_SIZE must be int"):
        load_config(p)


def test_cli_overrides_win_over_yaml_and_keep_types():
    cfg = load_config(REPO / "configs" / "demo.yaml", ["TRAIN.BATCH_SIZE", "7", "TRAIN.LR_SCHEDULER.LR_FT", "1e-3",
                                                       "NAME", "2024", "TRAIN.CLIP_GRAD", "False"])
    assert cfg.TRAIN.BATCH_SIZE == 7
    assert cfg.TRAIN.LR_SCHEDULER.LR_FT == pytest.approx(1e-3)
    assert cfg.NAME == "2024"  # a string key stays a string
    assert cfg.TRAIN.CLIP_GRAD is False


def test_cli_unknown_key_and_odd_pairs():
    with pytest.raises(ConfigError, match="TRAIN.EPOCHS"):
        load_config(None, ["TRAIN.EPOCHS", "3"])
    with pytest.raises(ConfigError, match="KEY VALUE pairs"):
        load_config(None, ["TRAIN.MAX_EPOCH"])


def test_base_inheritance_and_base_override(tmp_path):
    write(tmp_path, "base.yaml", "NAME: base\nTRAIN:\n  MAX_EPOCH: 5\n  BATCH_SIZE: 8\n")
    write(tmp_path, "other.yaml", "NAME: other\nTRAIN:\n  MAX_EPOCH: 9\n")
    child = write(tmp_path, "child.yaml", "_BASE_: base.yaml\nNAME: child\nTRAIN:\n  BATCH_SIZE: 4\n")
    cfg = load_config(child)
    assert (cfg.NAME, cfg.TRAIN.MAX_EPOCH, cfg.TRAIN.BATCH_SIZE) == ("child", 5, 4)
    cfg = load_config(child, base=tmp_path / "other.yaml")
    assert (cfg.NAME, cfg.TRAIN.MAX_EPOCH, cfg.TRAIN.BATCH_SIZE) == ("child", 9, 4)


def test_native_configs_carry_the_single_attribute_lists():
    from dataset.attributes import NATIVE_37, NATIVE_46, NATIVE_GROUPS

    cfg = load_config(REPO / "configs" / "native.yaml")
    assert list(cfg.DATASET.ATTRS) == NATIVE_37 and len(NATIVE_37) == 37
    assert [list(g) for g in cfg.DATASET.GROUPS] == NATIVE_GROUPS
    assert list(load_config(REPO / "configs" / "native_46.yaml").DATASET.ATTRS) == NATIVE_46


def test_every_shipped_config_loads():
    for p in sorted((REPO / "configs").rglob("*.yaml")):
        load_config(p)


def test_seed_aliases_for_fine_tuning():
    assert load_config(None, ["RELOAD.FREEZE", "True"]).FINETUNE.MODE == "head"
    assert load_config(None, ["RELOAD.PARTIAL_FINE_TUNING", "True"]).FINETUNE.MODE == "partial"


def test_choice_keys_are_checked():
    with pytest.raises(ConfigError, match="FINETUNE.MODE"):
        load_config(None, ["FINETUNE.MODE", "parital"])
