"""A small Vision Transformer, shared by the tokenizer zoo.

Dosovitskiy et al., "An Image is Worth 16x16 Words" (ViT), ICLR 2021: pre-norm blocks
``x + Attn(LN(x))``, ``x + MLP(LN(x))``. Used as the VQ-KD encoder and decoder (Peng et al.,
BEiT v2, 2022), as the tiny randomly initialised teacher of the tests, and by the 1D tokenizer,
whose decoder needs a causal mask (``Block(..., causal=True)``).

    image (B, 3, H, W) -> PatchEmbed -> (B, N, C) tokens (+ learned positions) -> blocks -> LN
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn


class PatchEmbed(nn.Module):
    """Non-overlapping ``patch_size`` patches -> ``dim`` channels, a stride-p convolution."""

    def __init__(self, patch_size: int = 16, in_chans: int = 3, dim: int = 768):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, dim, patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.patch_size
        if x.shape[-1] % p or x.shape[-2] % p:
            raise ValueError(f"image size {tuple(x.shape[-2:])} must be divisible by the patch size {p}")
        return self.proj(x)  # (B, C, H/p, W/p)


class Attention(nn.Module):
    """Multi-head self-attention (``F.scaled_dot_product_attention``), optionally causal."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Block(nn.Module):
    """Pre-norm transformer block with a GELU MLP."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), mask)
        return x + self.mlp(self.norm2(x))


class Transformer(nn.Module):
    """``depth`` blocks and a final LayerNorm over (B, N, dim) tokens with learned positions."""

    def __init__(self, dim: int, depth: int, num_heads: int, num_tokens: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.pos_embed = nn.Parameter(torch.zeros(1, num_tokens, dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.ModuleList(Block(dim, num_heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def positions(self, n: int, grid: Optional[Tuple[int, int]] = None) -> torch.Tensor:
        """The first ``n`` learned positions, or for an image ``grid`` (h, w) of another size than
        the square training grid, the table resized bicubically (as timm's ``dynamic_img_size``)."""
        table = self.pos_embed
        side = math.isqrt(table.shape[1])
        if grid is None or tuple(grid) == (side, side) or side * side != table.shape[1]:
            if n > table.shape[1]:
                raise ValueError(f"{n} tokens, but the position table holds {table.shape[1]}")
            return table[:, :n]
        square = table.reshape(1, side, side, -1).permute(0, 3, 1, 2)
        resized = F.interpolate(square, size=tuple(grid), mode="bicubic", align_corners=False)
        return resized.flatten(2).transpose(1, 2)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None,
                grid: Optional[Tuple[int, int]] = None) -> torch.Tensor:
        x = x + self.positions(x.shape[1], grid)
        for blk in self.blocks:
            x = blk(x, mask)
        return self.norm(x)


def causal_mask(n: int, device=None) -> torch.Tensor:
    """Boolean (n, n) mask, True where attention is allowed (position t sees positions <= t)."""
    return torch.ones(n, n, dtype=torch.bool, device=device).tril()


class ViTEncoder(nn.Module):
    """Image -> patch features ``(B, dim, H/p, W/p)`` (channel-first, like a CNN feature map).

    Args:
        image_size: training resolution (sets the size of the position table, which is resized
            for other input sizes).
        patch_size, dim, depth, num_heads, mlp_ratio: the usual ViT sizes.
    """

    def __init__(self, image_size: int = 224, patch_size: int = 16, dim: int = 768, depth: int = 12,
                 num_heads: int = 12, mlp_ratio: float = 4.0, in_chans: int = 3):
        super().__init__()
        self.patch_size, self.dim = patch_size, dim
        self.patch_embed = PatchEmbed(patch_size, in_chans, dim)
        self.transformer = Transformer(dim, depth, num_heads, (image_size // patch_size) ** 2, mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.patch_embed(x)
        b, c, gh, gw = h.shape
        tokens = self.transformer(h.flatten(2).transpose(1, 2), grid=(gh, gw))
        return tokens.transpose(1, 2).reshape(b, c, gh, gw)


class TokenTransformer(nn.Module):
    """Feature map ``(B, in_dim, h, w)`` -> ``(B, out_dim, h, w)`` through a ViT over its positions.

    The VQ-KD decoder (BEiT v2: a shallow transformer that regresses teacher features from codes).
    """

    def __init__(self, in_dim: int, out_dim: int, num_tokens: int, dim: int = 768, depth: int = 1,
                 num_heads: int = 12, mlp_ratio: float = 4.0):
        super().__init__()
        self.proj_in = nn.Linear(in_dim, dim)
        self.transformer = Transformer(dim, depth, num_heads, num_tokens, mlp_ratio)
        self.proj_out = nn.Linear(dim, out_dim)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        b, _, h, w = z.shape
        tokens = self.proj_out(self.transformer(self.proj_in(z.flatten(2).transpose(1, 2)), grid=(h, w)))
        return tokens.transpose(1, 2).reshape(b, -1, h, w)
