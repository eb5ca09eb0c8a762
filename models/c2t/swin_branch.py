"""The spatial branch of C2T-Net: a Swin Transformer with the original's (mmcv/mmseg) semantics,
and a wrapper that turns any timm CNN into a spatial branch.

Why not timm's Swin module as is: the original C2T-Net runs mmcv's Swin, which pads the map to a
multiple of the window *before* the cyclic shift and always keeps the full window and shift,
even on maps smaller than a window (the 8x4 last stage at 256x128). timm shifts before padding
and shrinks the window on small maps, so its numbers differ. This module reproduces mmcv's
computation; its parameter names are timm's (``patch_embed.proj``, ``layers.{i}.downsample``
at the start of stage i >= 1, ``layers.{i}.blocks.{j}.attn.qkv``, ``mlp.fc1``, final ``norm``), so
timm-format Swin weights load directly, the Microsoft release after a key shift
(``models.pretrained.swin_state_to_timm``) and the mmcv layout through ``models.c2t.convert``.
The architecture itself (embed dim, depths, heads, window, MLP ratio) is read from the timm model
of that name, built on the meta device.
"""
from __future__ import annotations

import math
from typing import Sequence

import timm
import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp
from torch import nn

from models.c2t.ta_block import ta_on_map, ta_on_tokens

MASK_VALUE = -100.0  # the original's (and Microsoft's) value for cross-region pairs in shifted windows


def relative_position_index(win_h: int, win_w: int) -> torch.Tensor:
    """(Wh*Ww, Wh*Ww) index into the (2Wh-1)(2Ww-1) relative-position table."""
    ar = (torch.arange(win_h, device="cpu"), torch.arange(win_w, device="cpu"))  # real values even under meta
    coords = torch.stack(torch.meshgrid(*ar, indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)
    return (rel[..., 0] + win_h - 1) * (2 * win_w - 1) + (rel[..., 1] + win_w - 1)


def window_partition(x: torch.Tensor, ws: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * nW, ws*ws, C), windows in row-major order."""
    b, h, w, c = x.shape
    x = x.view(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, ws * ws, c)


def window_reverse(windows: torch.Tensor, ws: int, h: int, w: int) -> torch.Tensor:
    """(B * nW, ws*ws, C) -> (B, H, W, C)."""
    c = windows.shape[-1]
    x = windows.view(-1, h // ws, w // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, h, w, c)


def shift_mask(h: int, w: int, ws: int, shift: int, device: torch.device) -> torch.Tensor:
    """(nW, ws*ws, ws*ws) additive mask for shifted windows on an (already padded) h x w map."""
    img = torch.zeros(1, h, w, 1, device=device)
    cnt = 0
    for hs in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
        for wsl in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
            img[:, hs, wsl, :] = cnt
            cnt += 1
    win = window_partition(img, ws).squeeze(-1)
    diff = win.unsqueeze(1) - win.unsqueeze(2)
    return torch.zeros_like(diff).masked_fill(diff != 0, MASK_VALUE)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside a window, with a learned relative-position bias."""

    def __init__(self, dim: int, num_heads: int, window_size: int, qkv_bias: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.window_size = (window_size, window_size)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer("relative_position_index", relative_position_index(window_size, window_size),
                             persistent=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B*nW, N, C) windows, mask (nW, N, N) or None."""
        bw, n, c = x.shape
        q, k, v = self.qkv(x).reshape(bw, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(n, n, -1).permute(2, 0, 1).unsqueeze(0)  # 1, nH, N, N
        if mask is not None:
            nw = mask.shape[0]
            bias = (bias.unsqueeze(0) + mask.view(1, nw, 1, n, n)).expand(bw // nw, -1, -1, -1, -1)
            bias = bias.reshape(bw, self.num_heads, n, n)
        # softmax(q k^T * head_dim^-0.5 + bias) v: SDPA's default scale is the original's.
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
        # an explicit copy: the ONNX exporter's SDPA decomposition changes the output strides, and a
        # reshape traced as a view would then fail
        return self.proj(out.transpose(1, 2).clone(memory_format=torch.contiguous_format).reshape(bw, n, c))


class SwinBlock(nn.Module):
    """(Shifted-)window attention + MLP, both pre-norm with residuals, mmcv's pad-then-shift order."""

    def __init__(self, dim: int, num_heads: int, window_size: int, *, shift: bool, mlp_ratio: float,
                 qkv_bias: bool, drop_path: float):
        super().__init__()
        self.window_size = window_size
        self.shift_size = window_size // 2 if shift else 0
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, num_heads, window_size, qkv_bias)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def _attn(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        ws, s = self.window_size, self.shift_size
        x = F.pad(x, (0, 0, 0, (ws - w % ws) % ws, 0, (ws - h % ws) % ws))  # zeros at bottom / right
        hp, wp = x.shape[1], x.shape[2]
        mask = None
        if s:
            x = torch.roll(x, shifts=(-s, -s), dims=(1, 2))
            mask = shift_mask(hp, wp, ws, s, x.device)
        x = window_reverse(self.attn(window_partition(x, ws), mask), ws, hp, wp)
        if s:
            x = torch.roll(x, shifts=(s, s), dims=(1, 2))
        return x[:, :h, :w, :]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) -> (B, H, W, C)."""
        x = x + self.drop_path1(self._attn(self.norm1(x)))
        return x + self.drop_path2(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """2x2 neighbours -> one token: concatenation in timm / Microsoft order
    [(0,0), (1,0), (0,1), (1,1)] (row, column offsets), LayerNorm, Linear(4C, 2C) without bias.
    mmcv's nn.Unfold orders the 4C channels differently; ``models.c2t.convert`` permutes them."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        h, w = x.shape[1], x.shape[2]
        x = x.reshape(b, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 4, 2, 5).flatten(3)
        return self.reduction(self.norm(x))


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, dim: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(3, dim, patch_size, patch_size)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, H/p, W/p, C); the image is zero-padded at bottom/right like mmcv."""
        p = self.patch_size
        x = F.pad(x, (0, (p - x.shape[-1] % p) % p, 0, (p - x.shape[-2] % p) % p))
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class SwinStage(nn.Module):
    def __init__(self, dim: int, depth: int, num_heads: int, window_size: int, *, mlp_ratio: float,
                 qkv_bias: bool, drop_paths: Sequence[float], downsample: bool):
        super().__init__()
        self.downsample = PatchMerging(dim // 2) if downsample else nn.Identity()
        self.blocks = nn.Sequential(*[
            SwinBlock(dim, num_heads, window_size, shift=j % 2 == 1, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                      drop_path=drop_paths[j])
            for j in range(depth)
        ])


def meta_model(name: str, key: str = "MODEL.BACKBONE") -> nn.Module:
    """timm's ``name`` on the meta device: its structure without memory or initialisation."""
    try:
        with torch.device("meta"):
            return timm.create_model(name, pretrained=False, num_classes=0)
    except RuntimeError as e:
        raise ValueError(f"{key} = {name}: {e}; use a timm model name") from None


def swin_arch(name: str) -> dict:
    """Architecture of timm's Swin ``name`` (embed dim, depths, heads, window, MLP ratio, qkv bias)."""
    m = meta_model(name)
    if type(m) is not timm.models.swin_transformer.SwinTransformer:
        raise TypeError(f"{name} is not a timm SwinTransformer")
    blk = m.layers[0].blocks[0]
    windows = {layer.blocks[0].attn.window_size for layer in m.layers}
    if len(windows) != 1 or len(next(iter(windows))) != 2 or len(set(next(iter(windows)))) != 1:
        raise ValueError(f"MODEL.BACKBONE = {name}: only Swin models with one square window size are supported")
    dim = m.patch_embed.proj.out_channels
    return dict(
        patch_size=m.patch_embed.proj.kernel_size[0], embed_dim=dim,
        depths=tuple(len(layer.blocks) for layer in m.layers),
        num_heads=tuple(layer.blocks[0].attn.num_heads for layer in m.layers),
        window_size=next(iter(windows))[0], mlp_ratio=blk.mlp.fc1.out_features / dim,
        qkv_bias=blk.attn.qkv.bias is not None,
    )


class SwinBranch(nn.Module):
    """Swin spatial branch. ``forward(x, ta)`` applies ``ta[i]`` to the tokens entering stage i's
    blocks (after the patch embedding / the patch merging) and returns the final LayerNorm'ed
    map (B, C, H/32, W/32)."""

    def __init__(self, name: str, img_size: tuple[int, int], drop_path: float = 0.0):
        super().__init__()
        a = swin_arch(name)
        self.arch = a
        self.patch_embed = PatchEmbed(a["patch_size"], a["embed_dim"])
        total = sum(a["depths"])
        dpr = [drop_path * i / max(total - 1, 1) for i in range(total)]  # linear decay rule, as the original
        dims = [a["embed_dim"] * 2 ** i for i in range(len(a["depths"]))]
        self.layers = nn.ModuleList()
        for i, depth in enumerate(a["depths"]):
            start = sum(a["depths"][:i])
            self.layers.append(SwinStage(dims[i], depth, a["num_heads"][i], a["window_size"], mlp_ratio=a["mlp_ratio"],
                                         qkv_bias=a["qkv_bias"], drop_paths=dpr[start:start + depth],
                                         downsample=i > 0))
        self.norm = nn.LayerNorm(dims[-1])
        self.out_dim = dims[-1]
        # (channels, positions) of the map entering each stage: what each TA block sees.
        h, w = (math.ceil(s / a["patch_size"]) for s in img_size)
        self.ta_shapes = []
        for i, dim in enumerate(dims):
            if i:
                h, w = math.ceil(h / 2), math.ceil(w / 2)
            self.ta_shapes.append((dim, h * w))
        self.apply(_init_weights)

    def forward(self, x: torch.Tensor, ta: Sequence[nn.Module] = ()) -> torch.Tensor:
        x = self.patch_embed(x)
        for i, layer in enumerate(self.layers):
            x = layer.downsample(x)
            if ta:
                x = ta_on_tokens(ta[i], x)
            x = layer.blocks(x)
        return self.norm(x).permute(0, 3, 1, 2)


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


class CnnBranch(nn.Module):
    """Any timm CNN as the spatial branch. TA blocks act on the maps handed from one feature stage
    to the next (timm's ``feature_info`` stages at strides 4, 8 and 16), through forward hooks that
    live only for the duration of one forward call (so copies of the model stay independent); the
    output is ``forward_features`` (for EfficientNet: after conv_head / bn2)."""

    TA_REDUCTIONS = (4, 8, 16)

    def __init__(self, name: str, img_size: tuple[int, int], drop_path: float = 0.0):
        super().__init__()
        kwargs = {"drop_path_rate": drop_path} if drop_path else {}
        self.model = timm.create_model(name, pretrained=False, num_classes=0, global_pool="", **kwargs)
        info = getattr(self.model, "feature_info", None)
        if not info:
            raise ValueError(f"MODEL.BACKBONE = {name}: a CNN spatial branch needs timm feature_info")
        entries = info.get_dicts() if hasattr(info, "get_dicts") else info
        self.ta_points = [e["module"] for e in entries if e["reduction"] in self.TA_REDUCTIONS]
        self.out_dim = self.model.num_features
        self.ta_shapes = self._probe_shapes(img_size)

    def _run(self, x: torch.Tensor, hooks: Sequence) -> torch.Tensor:
        handles = [self.model.get_submodule(m).register_forward_hook(h) for m, h in zip(self.ta_points, hooks)]
        try:
            return self.model.forward_features(x)
        finally:
            for h in handles:
                h.remove()

    @torch.no_grad()
    def _probe_shapes(self, img_size: tuple[int, int]) -> list[tuple[int, int]]:
        """(channels, positions) at each TA point, from one dry run at the configured input size."""
        shapes = []

        def record(_m, _i, out):
            shapes.append((out.shape[1], out.shape[2] * out.shape[3]))

        device = next(self.model.parameters()).device
        was_training = self.model.training
        self.model.eval()
        try:
            self._run(torch.zeros(1, 3, *img_size, device=device), [record] * len(self.ta_points))
        finally:
            self.model.train(was_training)
        return shapes

    def forward(self, x: torch.Tensor, ta: Sequence[nn.Module] = ()) -> torch.Tensor:
        if not ta:
            return self.model.forward_features(x)
        return self._run(x, [lambda _m, _i, out, blk=blk: ta_on_map(blk, out) for blk in ta])


def build_spatial_branch(name: str, img_size: tuple[int, int], drop_path: float) -> nn.Module:
    """Swin (faithful mmcv semantics) or a timm CNN, chosen from the timm model's class."""
    probe = meta_model(name)
    if type(probe) is timm.models.swin_transformer.SwinTransformer:
        return SwinBranch(name, img_size, drop_path)
    if hasattr(probe, "cls_token") or hasattr(probe, "pos_embed") or "swin" in name:
        raise ValueError(f"MODEL.BACKBONE = {name}: the spatial branch must be a timm Swin (v1) or a CNN; "
                         "put transformers in MODEL.VIT")
    return CnnBranch(name, img_size, drop_path)
