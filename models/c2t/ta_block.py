"""C2T-Net's TA block: channel-aware attention over a (B, C, N) feature map.

q, k, v are ``Linear(N, N)`` maps over the N = H*W positions of each channel, so the attention
matrix is C x C: ``softmax(q k^T * N^-0.5) v``, then dropout and a residual add.

The original reshapes ``(attn @ v).transpose(1, 2)`` straight back to (B, C, N): a memory
reinterpretation, not an inverse transpose. ``faithful=True`` (default) keeps that exact
behaviour so original checkpoints compute what they computed when trained; ``faithful=False``
skips the transpose (the evidently intended map).
"""
from __future__ import annotations

import torch
from torch import nn


class TABlock(nn.Module):
    def __init__(self, num_tokens: int, drop: float = 0.1, faithful: bool = True):
        super().__init__()
        self.num_tokens = num_tokens
        self.faithful = faithful
        self.q = nn.Linear(num_tokens, num_tokens)
        self.k = nn.Linear(num_tokens, num_tokens)
        self.v = nn.Linear(num_tokens, num_tokens)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, N) -> (B, C, N)."""
        b, c, n = x.shape
        if n != self.num_tokens:
            raise ValueError(f"TA block built for {self.num_tokens} positions got {n}; the input size must "
                             "match DATASET.HEIGHT/WIDTH the model was built for")
        # The C x C attention is computed in float64: its logits are dot products over all N positions
        # (large), so the softmax amplifies float32 rounding of its inputs ~50x (measured on c2t_lite); in
        # float32, runtimes that round differently (PyTorch, onnxruntime, CPU vs GPU) disagree by ~2e-4 in
        # the output probabilities. Autocast leaves float64 alone; the matrices are small (C <= 1024).
        q, k, v = (lin(x) for lin in (self.q, self.k, self.v))
        scores = (q.double() @ k.double().transpose(1, 2)) * (n ** -0.5)
        out = (scores.softmax(dim=-1) @ v.double()).to(v.dtype)
        if self.faithful:
            out = out.transpose(1, 2).contiguous().reshape(b, c, n)
        return x + self.drop(out)

    def extra_repr(self) -> str:
        return f"num_tokens={self.num_tokens}, faithful={self.faithful}"


def ta_on_tokens(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply a TA block to channels-last tokens (B, H, W, C), as the original does between
    ``b (h w) c`` and ``b c (h w)``."""
    b, h, w, c = x.shape
    y = block(x.reshape(b, h * w, c).transpose(1, 2))
    return y.transpose(1, 2).reshape(b, h, w, c)


def ta_on_map(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply a TA block to a channels-first map (B, C, H, W)."""
    b, c, h, w = x.shape
    return block(x.reshape(b, c, h * w)).reshape(b, c, h, w)
