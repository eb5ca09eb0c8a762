"""Original C2T-Net checkpoints <-> this framework's C2T-Net.

The upar_challenge release saves ``{'state_dicts': model.state_dict(), ...}`` from a DataParallel
model (keys prefixed ``module.``), with the Swin branch in mmcv/mmseg naming. Mapping (original ->
ours, inside ``backbone.`` unless said otherwise):

==========================================================  ===========================================
original                                                    ours
==========================================================  ===========================================
patch_embed.projection / patch_embed.norm                   spatial.patch_embed.proj / .norm
stages.{i}.blocks.{j}.norm1 / norm2                         spatial.layers.{i}.blocks.{j}.norm1 / norm2
stages.{i}.blocks.{j}.attn.w_msa.{qkv,proj,rel. table}      spatial.layers.{i}.blocks.{j}.attn.*
stages.{i}.blocks.{j}.ffn.layers.0.0 / ffn.layers.1         spatial.layers.{i}.blocks.{j}.mlp.fc1 / fc2
stages.{i}.downsample.{norm,reduction}                      spatial.layers.{i+1}.downsample.* (*)
norm{last stage}                                            spatial.norm
tablocks.{i}.c_q / c_k / c_v                                ta_blocks.{i}.q / k / v
vit.*                                                       vit.*
cross_att_eva_swin.{wq,wk,wv,proj}                          fusion.vit_to_spatial.{q,k,v,proj}
cross_att_swin_eva.{wq,wk,wv,proj}                          fusion.spatial_to_vit.{q,k,v,proj}
norm_1 / norm_2                                             fusion.norm_spatial / fusion.norm_vit
classifier.logits.0 / classifier.logits.1 (top level)       head.logits / head.bn (top level)
==========================================================  ===========================================

(*) mmcv merges patches with ``nn.Unfold``, whose 4C channels run channel-major (c, then the 2x2
offset in row-major order); timm/Microsoft concatenate the four offsets [(0,0), (1,0), (0,1),
(1,1)] block by block. The reduction weight's columns and the norm's entries are permuted.

Dropped on the way in, rebuilt on the way out (they never reach the original's output):
``attn.w_msa.relative_position_index`` buffers, ``norm0 .. norm{last-1}`` and ``vit.fc_norm``.
Width projections of the smaller presets (not in the original) are named ``proj_swin`` /
``proj_eva``. Conversion is strict: any key missing or left over raises ``ConversionError``
naming them; only the head may differ in shape (a checkpoint for another attribute list).
"""
from __future__ import annotations

import re

import torch
from torch import nn

from models.c2t.c2tnet import C2TNet
from models.c2t.swin_branch import SwinBranch, relative_position_index
from models.c2t.swin_mmcv import (
    DEAD,
    mmcv_merge_to_timm,
    swap_parts,
    swin_key_to_timm,
    timm_key_to_swin,
    timm_merge_to_mmcv,
)
from configs.errors import UserError

# Fixed prefixes (original, ours), matched in order; relative to the model root.
PREFIXES = [
    ("backbone.cross_att_eva_swin.", "backbone.fusion.vit_to_spatial."),
    ("backbone.cross_att_swin_eva.", "backbone.fusion.spatial_to_vit."),
    ("backbone.norm_1.", "backbone.fusion.norm_spatial."),
    ("backbone.norm_2.", "backbone.fusion.norm_vit."),
    ("backbone.proj_swin.", "backbone.fusion.proj_spatial."),
    ("backbone.proj_eva.", "backbone.fusion.proj_vit."),
    ("backbone.vit.", "backbone.vit."),
    ("classifier.logits.0.", "head.logits."),
    ("classifier.logits.1.", "head.bn."),
]
CROSS_PARTS = [("wq.", "q."), ("wk.", "k."), ("wv.", "v."), ("proj.", "proj.")]
TA_PARTS = [("c_q.", "q."), ("c_k.", "k."), ("c_v.", "v.")]
class ConversionError(UserError, KeyError):
    """An original checkpoint that does not match the model; the message names the keys."""

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return str(self.args[0]) if self.args else ""



# ----------------------------------------------------------------------------- whole model
def _c2t(model: nn.Module) -> tuple[C2TNet, str]:
    """The C2TNet inside ``model`` (a PARModel or the backbone itself) and its key prefix there."""
    backbone, prefix = (model.backbone, "backbone.") if hasattr(model, "backbone") else (model, "")
    if not isinstance(backbone, C2TNet):
        raise ConversionError(f"the original C2T-Net layout needs a c2t_* model, got {type(backbone).__name__}")
    if not isinstance(backbone.spatial, SwinBranch):
        raise ConversionError(f"the original C2T-Net layout needs a Swin spatial branch; {backbone.names[0]} "
                              "has no counterpart there")
    return backbone, prefix


def _orig_to_ours(k: str, net: C2TNet) -> tuple[str | None, bool]:
    last = len(net.spatial.layers) - 1
    if k.startswith("backbone.vit.fc_norm.") and net.vit_fc_norm_dim is not None:
        return DEAD, False
    m = re.fullmatch(r"backbone\.tablocks\.(\d+)\.(.+)", k)
    if m:
        part = swap_parts(m.group(2), TA_PARTS, reverse=False)
        return (f"backbone.ta_blocks.{m.group(1)}.{part}" if part else None), False
    for orig, ours in PREFIXES:
        if k.startswith(orig):
            rest = k[len(orig):]
            if orig.startswith("backbone.cross_att_"):
                rest = swap_parts(rest, CROSS_PARTS, reverse=False)
                if rest is None:
                    return None, False
            return ours + rest, False
    if k.startswith("backbone."):
        new, merge = swin_key_to_timm(k[len("backbone."):], last)
        return (new if new in (None, DEAD) else "backbone.spatial." + new), merge
    return None, False


def _ours_to_orig(k: str, net: C2TNet) -> tuple[str | None, bool]:
    last = len(net.spatial.layers) - 1
    m = re.fullmatch(r"backbone\.ta_blocks\.(\d+)\.(.+)", k)
    if m:
        part = swap_parts(m.group(2), TA_PARTS, reverse=True)
        return (f"backbone.tablocks.{m.group(1)}.{part}" if part else None), False
    for orig, ours in PREFIXES:
        if k.startswith(ours):
            rest = k[len(ours):]
            if orig.startswith("backbone.cross_att_"):
                rest = swap_parts(rest, CROSS_PARTS, reverse=True)
                if rest is None:
                    return None, False
            return orig + rest, False
    if k.startswith("backbone.spatial."):
        new, merge = timm_key_to_swin(k[len("backbone.spatial."):], last)
        return (None if new is None else "backbone." + new), merge
    return None, False


def _strip(state: dict) -> dict[str, torch.Tensor]:
    if isinstance(state, dict) and isinstance(state.get("state_dicts"), dict):
        state = state["state_dicts"]
    if not isinstance(state, dict):
        raise ConversionError(f"expected a state dict, got {type(state).__name__}")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


def is_original_c2t(state: object) -> bool:
    """True for an original C2T-Net checkpoint (``{'state_dicts': ...}``) or its bare state dict."""
    if not isinstance(state, dict):
        return False
    inner = state.get("state_dicts", state)
    return isinstance(inner, dict) and any(
        isinstance(k, str) and k.removeprefix("module.").startswith(("backbone.cross_att_", "backbone.tablocks."))
        for k in inner)


def _names(keys: list[str], n: int = 8) -> str:
    return ", ".join(keys[:n]) + (f" ... ({len(keys)} in all)" if len(keys) > n else "")


def convert_original_state_dict(state: dict, model: nn.Module) -> dict[str, torch.Tensor]:
    """An original C2T-Net checkpoint (or its ``state_dicts``) -> a state dict for ``model``
    (a PARModel with a c2t backbone, or the C2TNet itself). Raises ``ConversionError`` naming every
    missing, unexpected or mis-shaped key; head tensors may differ in shape (another attribute list)."""
    net, prefix = _c2t(model)
    src = _strip(state)
    target = model.state_dict()
    out, unexpected, bad = {}, [], []
    for k, v in src.items():
        new, merge = _orig_to_ours(k, net)
        if new == DEAD:
            continue
        if new is not None and not prefix:  # converting into the bare C2TNet
            new = new[len("backbone."):] if new.startswith("backbone.") else None
        if new is None or new not in target:
            unexpected.append(k)
            continue
        v = mmcv_merge_to_timm(v) if merge else v
        if v.shape != target[new].shape and not new.startswith("head."):
            bad.append(f"{k} {tuple(v.shape)} vs {new} {tuple(target[new].shape)}")
        out[new] = v
    missing = [k for k in target if k not in out]
    if missing or unexpected or bad:
        parts = [f"missing {_names(missing)}" if missing else "",
                 f"unexpected {_names(unexpected)}" if unexpected else "",
                 f"shape mismatch {_names(bad, 4)}" if bad else ""]
        raise ConversionError("original C2T-Net checkpoint does not match this model: "
                              + "; ".join(p for p in parts if p)
                              + f". Check MODEL.NAME / MODEL.BACKBONE / MODEL.VIT / DATASET.HEIGHT/WIDTH "
                                f"(this model: {net.names[0]} + {net.names[1]} at {net.img_size[0]}x{net.img_size[1]})")
    return {k: out[k] for k in target}


def to_original_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Inverse of ``convert_original_state_dict``: the original's keys (``module.`` prefix, mmcv
    Swin naming and patch-merging order), with the dead LayerNorms and index buffers rebuilt, so the
    original code loads it with ``strict=True`` (wrap it as ``{'state_dicts': ...}`` for its reload)."""
    net, prefix = _c2t(model)
    out = {}
    for k, v in model.state_dict().items():
        full = k if prefix else "backbone." + k
        orig, merge = _ours_to_orig(full, net)
        if orig is None:
            raise ConversionError(f"'{k}' has no counterpart in the original C2T-Net layout")
        out["module." + orig] = timm_merge_to_mmcv(v) if merge else v
    ref = net.fusion.norm_spatial.weight
    dims = [net.spatial.arch["embed_dim"] * 2 ** i for i in range(len(net.spatial.layers))]
    for i, d in enumerate(dims[:-1]):  # norm0 .. norm{last-1}: built but never used by the original
        out[f"module.backbone.norm{i}.weight"] = torch.ones(d, dtype=ref.dtype, device=ref.device)
        out[f"module.backbone.norm{i}.bias"] = torch.zeros(d, dtype=ref.dtype, device=ref.device)
    if net.vit_fc_norm_dim is not None:
        out["module.backbone.vit.fc_norm.weight"] = torch.ones(net.vit_fc_norm_dim, dtype=ref.dtype, device=ref.device)
        out["module.backbone.vit.fc_norm.bias"] = torch.zeros(net.vit_fc_norm_dim, dtype=ref.dtype, device=ref.device)
    for i, layer in enumerate(net.spatial.layers):
        for j, blk in enumerate(layer.blocks):
            idx = relative_position_index(*blk.attn.window_size).to(ref.device)
            out[f"module.backbone.stages.{i}.blocks.{j}.attn.w_msa.relative_position_index"] = idx
    return out
