"""mmcv/mmseg Swin keys <-> timm Swin keys (used by the C2T-Net spatial branch loader and converter).

mmcv merges patches with ``nn.Unfold``, whose 4C channels run channel-major (c, then the 2x2
offset in row-major order); timm/Microsoft concatenate the four offsets block by block, so the
patch-merging reduction weight's columns and norm entries are permuted on the way.
"""
from __future__ import annotations

import re

import torch

DEAD = "<dead>"  # marker: an original key with no counterpart here (dropped on purpose)
MERGE_ORDER = [0, 2, 1, 3]  # timm block b <-> mmcv offset (row-major kh, kw); a self-inverse permutation

BLOCK_PARTS = [("attn.w_msa.", "attn."), ("ffn.layers.0.0.", "mlp.fc1."), ("ffn.layers.1.", "mlp.fc2."),
               ("norm1.", "norm1."), ("norm2.", "norm2.")]


def swap_parts(rest: str, parts: list[tuple[str, str]], reverse: bool) -> str | None:
    for a, b in parts:
        src, dst = (b, a) if reverse else (a, b)
        if rest.startswith(src):
            return dst + rest[len(src):]
    return None


# ----------------------------------------------------------------------------- patch-merging order
def mmcv_merge_to_timm(v: torch.Tensor) -> torch.Tensor:
    """Patch-merging reduction weight (out, 4C) or norm vector (4C): mmcv channel order -> timm."""
    if v.dim() == 2:
        o, c4 = v.shape
        return v.reshape(o, c4 // 4, 4)[:, :, MERGE_ORDER].transpose(1, 2).reshape(o, c4)
    return v.reshape(-1, 4)[:, MERGE_ORDER].transpose(0, 1).reshape(-1)


def timm_merge_to_mmcv(v: torch.Tensor) -> torch.Tensor:
    """Inverse of ``mmcv_merge_to_timm``."""
    if v.dim() == 2:
        o, c4 = v.shape
        return v.reshape(o, 4, c4 // 4)[:, MERGE_ORDER, :].transpose(1, 2).reshape(o, c4)
    return v.reshape(4, -1)[MERGE_ORDER, :].transpose(0, 1).reshape(-1)


# ----------------------------------------------------------------------------- Swin part
def swin_key_to_timm(rest: str, last_norm: int) -> tuple[str | None, bool]:
    """mmcv Swin key (relative to the Swin root) -> (our key relative to the branch, needs merge permutation)."""
    if rest.startswith("patch_embed.projection."):
        return "patch_embed.proj." + rest[len("patch_embed.projection."):], False
    if rest.startswith("patch_embed.norm."):
        return rest, False
    m = re.fullmatch(r"stages\.(\d+)\.blocks\.(\d+)\.(.+)", rest)
    if m:
        if m.group(3).endswith("relative_position_index"):
            return DEAD, False
        part = swap_parts(m.group(3), BLOCK_PARTS, reverse=False)
        return (f"layers.{m.group(1)}.blocks.{m.group(2)}.{part}" if part else None), False
    m = re.fullmatch(r"stages\.(\d+)\.downsample\.(.+)", rest)
    if m:
        return f"layers.{int(m.group(1)) + 1}.downsample.{m.group(2)}", True
    m = re.fullmatch(r"norm(\d+)\.(.+)", rest)
    if m:
        return ("norm." + m.group(2) if int(m.group(1)) == last_norm else DEAD), False
    return None, False


def timm_key_to_swin(rest: str, last_norm: int) -> tuple[str | None, bool]:
    if rest.startswith("patch_embed.proj."):
        return "patch_embed.projection." + rest[len("patch_embed.proj."):], False
    if rest.startswith("patch_embed.norm."):
        return rest, False
    m = re.fullmatch(r"layers\.(\d+)\.blocks\.(\d+)\.(.+)", rest)
    if m:
        part = swap_parts(m.group(3), BLOCK_PARTS, reverse=True)
        return (f"stages.{m.group(1)}.blocks.{m.group(2)}.{part}" if part else None), False
    m = re.fullmatch(r"layers\.(\d+)\.downsample\.(.+)", rest)
    if m:
        return f"stages.{int(m.group(1)) - 1}.downsample.{m.group(2)}", True
    if rest.startswith("norm."):
        return f"norm{last_norm}." + rest[len("norm."):], False
    return None, False


def is_mmcv_swin(state: dict) -> bool:
    """A Swin-only checkpoint in mmcv/mmseg naming (``[backbone.]stages.{i}.blocks...``)."""
    return any(re.match(r"(backbone\.)?stages\.\d+\.blocks\.", k) for k in state)


def mmcv_swin_to_timm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An mmcv/mmseg Swin state dict (e.g. SOLIDER, mmseg backbones) -> timm naming; unknown keys pass through."""
    state = {k[len("backbone."):] if k.startswith("backbone.") else k: v for k, v in state.items()}
    norms = [int(m.group(1)) for k in state if (m := re.fullmatch(r"norm(\d+)\..+", k))]
    out = {}
    for k, v in state.items():
        new, merge = swin_key_to_timm(k, max(norms, default=-1))
        if new == DEAD:
            continue
        out[new or k] = mmcv_merge_to_timm(v) if merge else v
    return out
