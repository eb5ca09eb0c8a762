"""Pretrain on one dataset, fine-tune on another attribute list; mixed training from two sources."""
import numpy as np
import openpyxl
import pytest
import torch
from PIL import Image

from tests.conftest import REPO, tiny_opts


def native_miniature(root, n_tubes=24, seed=0):
    """A NATIVE-layout miniature: label/ sheet with other attributes + main_data/ JPEGs."""
    rng = np.random.default_rng(seed)
    img_dir = root / "main_data" / "filtered_refined_data"
    img_dir.mkdir(parents=True)
    (root / "label").mkdir()
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["ID", "Hat", "Backpack", "Jeans", "Quality"])
    for t in range(n_tubes):
        for f in range(2):
            rid = f"c1_v2_{t}_{f}"
            hat, bag, jeans = (int(v) for v in rng.random(3) < 0.5)
            img = rng.integers(0, 255, (80, 40, 3), dtype=np.uint8)
            img[:10] = 0 if hat else 255
            Image.fromarray(img).save(img_dir / f"{rid}.jpg")
            ws.append([rid, hat or None, bag or None, jeans or None, "high"])
    wb.save(root / "label" / "refined_Native_dataset.xlsx")
    return root


def test_head_finetune_on_other_attributes_reinitialises_only_the_head(tmp_path):
    from configs import load_config
    from tools.engine import run_training as train

    src = load_config(REPO / "configs/demo.yaml", tiny_opts(tmp_path, NAME="source"))
    train(src)
    source_ckpt = torch.load(tmp_path / "exp/SYNTH/source/best_model.pth", weights_only=True)

    nat = native_miniature(tmp_path / "NATIVE")
    opts = tiny_opts(tmp_path, **{
        "NAME": "transfer", "DATASET.NAME": "NATIVE", "DATASET.NATIVE_EXCEL": nat / "label/refined_Native_dataset.xlsx",
        "DATASET.IMAGE_PATH": nat / "main_data/filtered_refined_data", "DATASET.GROUPS": "[]",
        "RELOAD.TYPE": "True", "RELOAD.MODEL_FOLDER_NAME": "source", "RELOAD.DATASET": "SYNTH",
        "FINETUNE.MODE": "head", "TRAIN.LR_SCHEDULER.LR_NEW": "0.01"})
    train(load_config(REPO / "configs/demo.yaml", opts))
    tuned = torch.load(tmp_path / "exp/NATIVE/transfer/best_model.pth", weights_only=True)
    assert tuned["attr_names"] == ["Hat", "Backpack", "Jeans"]
    assert tuned["model"]["head.logits.weight"].shape == (3, source_ckpt["model"]["head.logits.weight"].shape[1])
    backbone = [k for k in source_ckpt["model"] if k.startswith("backbone.")]
    assert backbone and all(torch.equal(source_ckpt["model"][k], tuned["model"][k]) for k in backbone)


def test_a_split_head_run_starts_from_a_linear_head_checkpoint(tmp_path):
    from configs import load_config
    from tools.engine import run_training as train

    train(load_config(REPO / "configs/demo.yaml", tiny_opts(tmp_path, NAME="linear")))
    source = torch.load(tmp_path / "exp/SYNTH/linear/best_model.pth", weights_only=True)["model"]
    train(load_config(REPO / "configs/demo.yaml", tiny_opts(tmp_path, **{
        "NAME": "split", "MODEL.HEAD": "split", "RELOAD.TYPE": "True", "RELOAD.MODEL_FOLDER_NAME": "linear",
        "FINETUNE.MODE": "head"})))
    tuned = torch.load(tmp_path / "exp/SYNTH/split/best_model.pth", weights_only=True)["model"]
    backbone = [k for k in source if k.startswith("backbone.")]
    assert backbone and all(torch.equal(source[k], tuned[k]) for k in backbone)
    assert not set(k for k in source if k.startswith("head.")) & set(tuned)  # another head type: fresh


def test_mixed_training_adds_source_train_rows_only(tmp_path):
    from configs import load_config
    from dataset import build_data

    other = tmp_path / "other.yaml"
    other.write_text(f"DATASET:\n  NAME: SYNTH\n  ROOT: {tmp_path / 'synth2'}\n  SYNTH_SIZE: 40\n  SPLIT_SEED: 5\n")
    cfg = load_config(REPO / "configs/demo.yaml", tiny_opts(tmp_path, **{"DATASET.SOURCES": f"['{other}']"}))
    single = build_data(load_config(REPO / "configs/demo.yaml", tiny_opts(tmp_path)))
    mixed = build_data(cfg)
    assert len(mixed.image_paths) == len(single.image_paths) + 40
    assert len(mixed.splits["train"]) == len(single.splits["train"]) + int(40 * 0.7)
    assert np.array_equal(mixed.splits["val"], single.splits["val"])
    assert np.array_equal(mixed.labels[: len(single.labels)], single.labels)


def test_a_source_map_relabels_by_union_and_leaves_unmapped_attributes_unknown(tmp_path):
    import pytest

    from dataset.attr_map import relabel_by_map
    from dataset.base import UNKNOWN, DataError, PARData

    src = PARData("SRC", [tmp_path / f"{i}.jpg" for i in range(4)],
                  np.array([[1, 0, 0, 1], [0, 1, 0, 0], [0, 0, 0, 0], [0, UNKNOWN, 1, 0]], np.float32),
                  ["young15", "young30", "old", "hat"], {"train": np.arange(4)})
    path = tmp_path / "m.yaml"
    path.write_text("map:\n  Age_young: [young30, young15]\n  Age_old: [old]\n  Hat: [hat]\n  Bag: [hat]\n"
                    "unmapped: [Jeans]\n")
    got = relabel_by_map(src, path, ["Age_young", "Age_old", "Hat", "Jeans"])  # Bag: not in this run
    assert got.attr_names == ["Age_young", "Age_old", "Hat"]
    np.testing.assert_array_equal(got.labels, [[1, 0, 1], [1, 0, 0], [0, 0, 0], [UNKNOWN, 1, 0]])
    path.write_text("map:\n  Hat: [hatt]\n")
    with pytest.raises(DataError, match="hatt"):
        relabel_by_map(src, path, ["Hat"])


def test_mixed_training_with_a_source_map(tmp_path):
    from configs import load_config
    from dataset import build_data
    from dataset.base import UNKNOWN

    other = tmp_path / "other.yaml"
    other.write_text(f"DATASET:\n  NAME: SYNTH\n  ROOT: {tmp_path / 'synth2'}\n  SYNTH_SIZE: 40\n  SPLIT_SEED: 5\n")
    single = build_data(load_config(REPO / "configs/demo.yaml", tiny_opts(tmp_path)))
    names = single.attr_names
    amap = tmp_path / "synth_map.yaml"  # the first target takes the union of the source's first two attributes
    amap.write_text(f"map:\n  {names[0]}: [{names[0]}, {names[1]}]\n  {names[2]}: [{names[2]}]\n")
    opts = tiny_opts(tmp_path, **{"DATASET.SOURCES": f"['{other}']", "DATASET.SOURCE_MAPS": f"[['SYNTH', '{amap}']]"})
    mixed = build_data(load_config(REPO / "configs/demo.yaml", opts))
    extra = load_config(str(other))
    from dataset.registry import read_dataset

    raw = read_dataset(extra)
    rows = mixed.labels[len(single.labels):]
    np.testing.assert_array_equal(rows[:, 0], np.maximum(raw.labels[:, 0], raw.labels[:, 1]))
    np.testing.assert_array_equal(rows[:, 2], raw.labels[:, 2])
    assert (rows[:, 1] == UNKNOWN).all() and (rows[:, 3:] == UNKNOWN).all()


def test_head_rows_of_mapped_attributes_start_from_the_source_head(tmp_path):
    """RELOAD.ATTR_MAP: NATIVE-miniature attributes mapped to SYNTH ones start from those head rows
    (the first listed source when several); an unmapped one keeps its fresh initialisation."""
    from configs import load_config
    from models import build_model
    from tools.engine.build import reload_weights

    train_src = load_config(REPO / "configs/demo.yaml", tiny_opts(tmp_path, NAME="source", **{"TRAIN.MAX_EPOCH": 1}))
    from tools.engine import run_training

    run_training(train_src)
    src = torch.load(tmp_path / "exp/SYNTH/source/best_model.pth", weights_only=True)
    names = list(src["attr_names"])
    amap = tmp_path / "map.yaml"
    amap.write_text(f"map:\n  Hat: [{names[3]}, {names[1]}]\n  Jeans: [{names[0]}]\nunmapped: [Backpack]\n")
    cfg = load_config(REPO / "configs/demo.yaml", tiny_opts(tmp_path, **{
        "RELOAD.TYPE": "True", "RELOAD.MODEL_FOLDER_NAME": "source", "RELOAD.DATASET": "SYNTH",
        "RELOAD.ATTR_MAP": str(amap)}))
    torch.manual_seed(0)
    model = build_model(cfg, 3)
    fresh = model.head.logits.weight.detach().clone()
    reload_weights(cfg, model, ["Hat", "Backpack", "Jeans"])
    w, b = model.head.logits.weight.detach(), model.head.logits.bias.detach()
    assert torch.equal(w[0], src["model"]["head.logits.weight"][3]) and torch.equal(b[0], src["model"]["head.logits.bias"][3])
    assert torch.equal(w[2], src["model"]["head.logits.weight"][0])
    assert torch.equal(w[1], fresh[1])  # Backpack: no counterpart, fresh rows
    backbone = [k for k in src["model"] if k.startswith("backbone.")]
    assert all(torch.equal(src["model"][k], model.state_dict()[k]) for k in backbone)


def test_the_shipped_peta_to_native_map_names_real_attributes():
    from dataset.attr_map import PETA_TO_NATIVE, head_rows, peta_to_native
    from dataset.attributes import NATIVE_46
    from dataset.public.peta_raw import PETA_ATTRS

    m = peta_to_native()
    assert m["Gender_female"] == ["personalFemale"] and m["Age_young"][0] == "personalLess30"
    rows = head_rows(PETA_TO_NATIVE, PETA_ATTRS, NATIVE_46)
    assert NATIVE_46[next(iter(rows))] in m and len(rows) == len(m)
    assert PETA_ATTRS[rows[NATIVE_46.index("Backpack")]] == "carryingBackpack"


def test_a_reid_model_starts_from_a_par_checkpoint_backbone(tmp_path):
    """RELOAD of a PAR checkpoint into TASK reid: the backbone comes from the checkpoint, the ReID head (absent
    there) starts fresh, and the attribute head the ReID model lacks is dropped; a wrong backbone still fails."""
    from models import build_model
    from tests._video_helpers import make_checkpoint, tiny_cfg
    from tools.checkpoint import CheckpointError
    from tools.engine.build import reload_weights

    src = torch.load(make_checkpoint(tmp_path / "par.pth"), weights_only=True)["model"]
    cfg = tiny_cfg()
    cfg.TASK, cfg.DATASET.ATTRS, cfg.DATASET.GROUPS = "reid", [], []
    cfg.RELOAD.TYPE, cfg.RELOAD.PTH = True, str(tmp_path / "par.pth")
    model = build_model(cfg, 0, num_ids=4)
    reload_weights(cfg, model)
    own = model.state_dict()
    backbone = [k for k in src if k.startswith("backbone.")]
    assert backbone and all(torch.equal(src[k], own[k]) for k in backbone)
    assert any(k.startswith("reid_head.") for k in own)
    src[backbone[0]] = src[backbone[0]][..., :1]  # another backbone: refused with the key named
    torch.save({"model": src, "attr_names": []}, tmp_path / "other.pth")
    cfg.RELOAD.PTH = str(tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="other tensor shapes"):
        reload_weights(cfg, build_model(cfg, 0, num_ids=4))


def test_a_reid_checkpoint_of_another_identity_count_starts_a_reid_run(tmp_path):
    """ReID -> ReID (e.g. Market -> Duke): the backbone and BNNeck load, the identity classifier starts fresh."""
    from models import build_model
    from tests._index_helpers import make_reid_checkpoint
    from tests._video_helpers import tiny_cfg
    from tools.engine.build import reload_weights

    src = torch.load(make_reid_checkpoint(tmp_path / "reid4.pth"), weights_only=True)["model"]
    cfg = tiny_cfg()
    cfg.TASK, cfg.DATASET.ATTRS, cfg.DATASET.GROUPS = "reid", [], []
    cfg.RELOAD.TYPE, cfg.RELOAD.PTH = True, str(tmp_path / "reid4.pth")
    torch.manual_seed(1)
    model = build_model(cfg, 0, num_ids=9)
    fresh = model.state_dict()["reid_head.classifier.weight"].clone()
    reload_weights(cfg, model)
    own = model.state_dict()
    assert own["reid_head.classifier.weight"].shape[0] == 9 and torch.equal(own["reid_head.classifier.weight"], fresh)
    assert all(torch.equal(src[k], own[k]) for k in src if not k.startswith("reid_head.classifier"))
