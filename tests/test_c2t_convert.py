"""Original C2T-Net checkpoints: the converter, its inverse, strictness, and the c2t_base layout."""
from __future__ import annotations

import copy

import pytest
import timm
import torch

from tests.test_c2t_model import c2t_cfg
from models import build_model
from models.c2t.convert import (ConversionError, convert_original_state_dict, is_original_c2t,
                                timm_merge_to_mmcv, to_original_state_dict)

N_ATTR = 5


@pytest.fixture(scope="module")
def pair():
    """A c2t_small with a BatchNorm head, and a copy with every tensor changed."""
    torch.manual_seed(0)
    src = build_model(c2t_cfg("c2t_small", 64, 32, HEAD_BN=True), N_ATTR).eval()
    with torch.no_grad():
        src.head.bn.running_mean.normal_()
        src.head.bn.running_var.uniform_(0.5, 2.0)
    dst = copy.deepcopy(src)
    with torch.no_grad():
        for t in dst.state_dict().values():
            t.add_(1) if t.is_floating_point() else t.add_(3)
    return src, dst


def test_round_trip_reproduces_the_outputs(pair):
    src, dst = pair
    x = torch.rand(2, 3, 64, 32)
    with torch.no_grad():
        assert not torch.equal(src(x), dst(x))
    orig = to_original_state_dict(src)
    assert all(k.startswith("module.") for k in orig)
    ckpt = {"state_dicts": orig, "epoch": "x in epoch 3", "metric": 0.8}  # what the original's save_ckpt writes
    assert is_original_c2t(ckpt)
    dst.load_state_dict(convert_original_state_dict(ckpt, dst), strict=True)
    with torch.no_grad():
        assert torch.equal(src(x), dst(x))


def test_original_naming_and_patch_merging_order(pair):
    src, _ = pair
    orig = to_original_state_dict(src)
    sw = src.backbone.spatial
    ours = sw.layers[1].downsample.reduction.weight
    theirs = orig["module.backbone.stages.0.downsample.reduction.weight"]
    assert torch.equal(theirs, timm_merge_to_mmcv(ours)) and not torch.equal(theirs, ours)
    assert torch.equal(orig["module.backbone.stages.1.blocks.1.ffn.layers.0.0.weight"], sw.layers[1].blocks[1].mlp.fc1.weight)
    assert torch.equal(orig["module.backbone.tablocks.2.c_v.bias"], src.backbone.ta_blocks[2].v.bias)
    assert torch.equal(orig["module.backbone.cross_att_swin_eva.wq.weight"], src.backbone.fusion.spatial_to_vit.q.weight)
    assert torch.equal(orig["module.backbone.norm_2.weight"], src.backbone.fusion.norm_vit.weight)
    assert torch.equal(orig["module.backbone.norm3.bias"], sw.norm.bias)
    assert torch.equal(orig["module.classifier.logits.1.running_mean"], src.head.bn.running_mean)
    # dead in the original's forward, rebuilt so its code loads the dict strictly
    assert torch.equal(orig["module.backbone.norm0.weight"], torch.ones(96))
    assert torch.equal(orig["module.backbone.vit.fc_norm.bias"], torch.zeros(192))
    idx = orig["module.backbone.stages.3.blocks.0.attn.w_msa.relative_position_index"]
    assert idx.shape == (49, 49) and idx[0, 0] == 84 and idx[0, 48] == 0 and idx[48, 0] == 168


def test_converter_names_missing_unexpected_and_misshaped_keys(pair):
    _, dst = pair
    orig = to_original_state_dict(pair[0])
    broken = dict(orig)
    del broken["module.backbone.tablocks.1.c_k.weight"]
    broken["module.backbone.extra_layer.weight"] = torch.zeros(3)
    with pytest.raises(ConversionError, match=r"missing backbone\.ta_blocks\.1\.k\.weight.*unexpected "
                                              r"backbone\.extra_layer\.weight") as e:
        convert_original_state_dict({"state_dicts": broken}, dst)
    assert "swin_tiny_patch4_window7_224 + eva02_tiny_patch14_224 at 64x32" in str(e.value)
    wrong = dict(orig)
    wrong["module.backbone.cross_att_eva_swin.wk.weight"] = torch.zeros(4, 4)
    with pytest.raises(ConversionError, match=r"shape mismatch backbone\.cross_att_eva_swin\.wk\.weight \(4, 4\)"):
        convert_original_state_dict(wrong, dst)
    other_head = dict(orig)  # a checkpoint for another attribute list: the caller re-initialises the head
    other_head["module.classifier.logits.0.weight"] = torch.zeros(9, 384)
    assert convert_original_state_dict(other_head, dst)["head.logits.weight"].shape == (9, 384)


def test_is_original_c2t_tells_formats_apart(pair):
    src, _ = pair
    assert is_original_c2t(to_original_state_dict(src))
    assert not is_original_c2t({"model": src.state_dict()})
    assert not is_original_c2t(src.state_dict())
    assert not is_original_c2t("best_model.pth")


def test_cnn_spatial_branch_has_no_original_layout():
    with torch.device("meta"):
        lite = build_model(c2t_cfg("c2t_lite", 64, 32), N_ATTR)
    with pytest.raises(ConversionError, match="needs a Swin spatial branch; efficientnet_lite0"):
        to_original_state_dict(lite)


def original_c2t_base_keys() -> set[str]:
    """The key set of the original's best_model.pth, written from its module structure (mmcv Swin-B
    with norm0-3, timm eva_large_patch14_196 as ``vit``, TA blocks, cross-attentions, linear head)."""
    keys = [f"backbone.patch_embed.{m}.{p}" for m in ("projection", "norm") for p in ("weight", "bias")]
    for i, depth in enumerate((2, 2, 18, 2)):
        for j in range(depth):
            b = f"backbone.stages.{i}.blocks.{j}."
            keys += [b + "attn.w_msa.relative_position_bias_table", b + "attn.w_msa.relative_position_index"]
            keys += [b + m + p for m in ("norm1", "norm2", "attn.w_msa.qkv", "attn.w_msa.proj", "ffn.layers.0.0",
                                         "ffn.layers.1") for p in (".weight", ".bias")]
        if i < 3:
            keys += [f"backbone.stages.{i}.downsample.{p}" for p in ("norm.weight", "norm.bias", "reduction.weight")]
        keys += [f"backbone.norm{i}.weight", f"backbone.norm{i}.bias"]
        keys += [f"backbone.tablocks.{i}.c_{m}.{p}" for m in "qkv" for p in ("weight", "bias")]
    with torch.device("meta"):
        eva = timm.create_model("eva_large_patch14_196", pretrained=False, img_size=(256, 128), num_classes=0)
    keys += ["backbone.vit." + k for k in eva.state_dict()]
    for c in ("cross_att_eva_swin", "cross_att_swin_eva"):
        keys += [f"backbone.{c}.{m}.weight" for m in ("wq", "wk", "wv", "proj")] + [f"backbone.{c}.proj.bias"]
    keys += [f"backbone.norm_{i}.{p}" for i in (1, 2) for p in ("weight", "bias")]
    keys += ["classifier.logits.0.weight", "classifier.logits.0.bias"]
    return {"module." + k for k in keys}


def test_c2t_base_layout_matches_the_original():
    with torch.device("meta"):
        m = build_model(c2t_cfg("c2t_base", 256, 128), N_ATTR)
    orig = to_original_state_dict(m)
    want = original_c2t_base_keys()
    assert set(orig) == want, (sorted(set(orig) - want)[:5], sorted(want - set(orig))[:5])
    shapes = {
        "backbone.tablocks.0.c_q.weight": (2048, 2048), "backbone.tablocks.3.c_v.weight": (32, 32),
        "backbone.stages.2.blocks.17.ffn.layers.0.0.weight": (2048, 512),
        "backbone.stages.0.downsample.reduction.weight": (256, 512), "backbone.stages.2.downsample.norm.weight": (2048,),
        "backbone.stages.0.blocks.1.attn.w_msa.relative_position_bias_table": (169, 4),
        "backbone.norm0.weight": (128,), "backbone.norm3.weight": (1024,), "backbone.vit.pos_embed": (1, 163, 1024),
        "backbone.cross_att_eva_swin.wq.weight": (1024, 1024), "backbone.norm_1.weight": (1024,),
        "classifier.logits.0.weight": (N_ATTR, 2048),
    }
    for k, shape in shapes.items():
        assert tuple(orig["module." + k].shape) == shape, k
    n_params = sum(v.numel() for k, v in orig.items() if not k.endswith("relative_position_index"))
    assert n_params == 411_651_992 + 2048 * N_ATTR + N_ATTR  # ~412 M, as the paper reports
    back = convert_original_state_dict({"state_dicts": orig}, m)
    own = m.state_dict()
    assert list(back) == list(own) and all(back[k].shape == own[k].shape for k in own)
