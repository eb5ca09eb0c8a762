"""C2T-Net's cross-fusion of the spatial (Swin / CNN) and transformer (EVA / ViT) branches.

Two cross-attention blocks (no qkv bias, scale head_dim^-0.5, output projection with bias, no MLP);
the query is token 0 only, keys/values are all tokens including the query:

* transformer -> spatial: query = the transformer's class token, tokens = [class token, spatial
  tokens]; result = class token + attention.
* spatial -> transformer: query = the average-pooled spatial map, tokens = [that, transformer
  patch tokens]; result = pooled + attention.

Each result has its own LayerNorm; the feature is ``cat([spatial side, transformer side])``.
When a branch's width differs from the fusion width, a Linear projects its tokens first (none in
the original, where both are 1024 wide).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CrossAttention(nn.Module):
    """Attention of token 0 over all tokens: (B, N, C) -> (B, 1, C)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"MODEL.FUSION_HEADS = {num_heads} does not divide the fusion width {dim}; "
                             "pick a divisor or change MODEL.FUSION_DIM")
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=False)
        self.k = nn.Linear(dim, dim, bias=False)
        self.v = nn.Linear(dim, dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        h = self.num_heads
        q = self.q(x[:, :1]).view(b, 1, h, c // h).transpose(1, 2)
        k = self.k(x).view(b, n, h, c // h).transpose(1, 2)
        v = self.v(x).view(b, n, h, c // h).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v)  # default scale = head_dim^-0.5, as the original
        return self.proj(out.transpose(1, 2).contiguous().reshape(b, 1, c))


class CrossFusion(nn.Module):
    def __init__(self, spatial_dim: int, vit_dim: int, dim: int, num_heads: int):
        super().__init__()
        self.dim = dim
        self.proj_spatial = nn.Linear(spatial_dim, dim) if spatial_dim != dim else nn.Identity()
        self.proj_vit = nn.Linear(vit_dim, dim) if vit_dim != dim else nn.Identity()
        self.vit_to_spatial = CrossAttention(dim, num_heads)  # original: cross_att_eva_swin
        self.spatial_to_vit = CrossAttention(dim, num_heads)  # original: cross_att_swin_eva
        self.norm_spatial = nn.LayerNorm(dim)  # original: norm_1
        self.norm_vit = nn.LayerNorm(dim)  # original: norm_2
        self.out_dim = 2 * dim

    def forward(self, fmap: torch.Tensor, tokens: torch.Tensor, num_prefix_tokens: int) -> torch.Tensor:
        """fmap (B, Cs, h, w) from the spatial branch, tokens (B, T, Cv) from the transformer
        (class token first, then ``num_prefix_tokens - 1`` other prefix tokens, then patches)."""
        s = self.proj_spatial(fmap.flatten(2).transpose(1, 2))  # (B, h*w, D), row-major like the original
        t = self.proj_vit(tokens)
        cls = t[:, :1]
        vit_side = cls + self.vit_to_spatial(torch.cat([cls, s], dim=1))
        pooled = s.mean(dim=1, keepdim=True)
        spatial_side = pooled + self.spatial_to_vit(torch.cat([pooled, t[:, num_prefix_tokens:]], dim=1))
        return torch.cat([self.norm_spatial(spatial_side[:, 0]), self.norm_vit(vit_side[:, 0])], dim=-1)
