"""Swin Transformer blocks and the residual Swin Transformer block (RSTB) of SwinIR.

* Liu et al., "Swin Transformer: Hierarchical Vision Transformer using Shifted Windows", ICCV 2021.
* Liang et al., "SwinIR: Image Restoration Using Swin Transformer", ICCVW 2021 (RSTB).

Attribute and buffer names follow SwinIR (``residual_group.blocks.{i}.attn.qkv``,
``relative_position_bias_table``, persistent ``relative_position_index`` and ``attn_mask``
buffers, ``conv``), as the DC-VIC VQ estimator stores them in its checkpoints.

RSTB on a feature map (B, C, H, W)::

    x -> tokens -> [SwinBlock(shift 0), SwinBlock(shift w/2), ...] -> map -> conv3x3 -> + x
    SwinBlock: t -> t + W-MSA(LN(t)) -> t + MLP(LN(t))      (windows of w x w, relative bias)

Maps whose sides are not multiples of the window are reflect-padded (``pad_to_window``).
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def window_partition(x: Tensor, ws: int) -> Tensor:
    """(B, H, W, C) -> (B * nW, ws * ws, C)."""
    B, H, W, C = x.shape
    x = x.view(B, H // ws, ws, W // ws, ws, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, ws * ws, C)


def window_reverse(windows: Tensor, ws: int, H: int, W: int) -> Tensor:
    """(B * nW, ws * ws, C) -> (B, H, W, C)."""
    C = windows.shape[-1]
    B = windows.shape[0] // ((H // ws) * (W // ws))
    x = windows.view(B, H // ws, W // ws, ws, ws, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(B, H, W, C)


def shifted_window_mask(H: int, W: int, ws: int, shift: int) -> Tensor:
    """Additive mask (nW, ws*ws, ws*ws): -100 between tokens from different regions after the roll."""
    img = torch.zeros(1, H, W, 1)
    cnt = 0
    for hs in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
        for wsl in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
            img[:, hs, wsl, :] = cnt
            cnt += 1
    win = window_partition(img, ws).squeeze(-1)  # nW, ws*ws
    diff = win.unsqueeze(1) - win.unsqueeze(2)
    return diff.masked_fill(diff != 0, -100.0).masked_fill(diff == 0, 0.0)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside a window, with a learned relative position bias."""

    def __init__(self, dim: int, window_size: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.window_size = window_size
        n = 2 * window_size - 1
        self.relative_position_bias_table = nn.Parameter(torch.zeros(n * n, num_heads))
        coords = torch.stack(torch.meshgrid(torch.arange(window_size), torch.arange(window_size),
                                            indexing="ij")).flatten(1)  # 2, ws*ws
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window_size - 1)
        self.register_buffer("relative_position_index", rel[..., 0] * n + rel[..., 1])
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """x (B * nW, N, C); mask (nW, N, N) or None."""
        B_, N, C = x.shape
        qkv = self.qkv(x).reshape(B_, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(N, N, -1).permute(2, 0, 1).unsqueeze(0)  # 1, heads, N, N
        if mask is not None:
            nW = mask.shape[0]
            bias = (bias.unsqueeze(1) + mask[None, :, None]).expand(B_ // nW, -1, -1, -1, -1)
            bias = bias.reshape(B_, self.num_heads, N, N)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
        return self.proj(out.transpose(1, 2).reshape(B_, N, C))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwinTransformerBlock(nn.Module):
    """(Shifted-)window attention + MLP, both pre-norm residual, on tokens (B, H*W, C)."""

    def __init__(self, dim: int, input_resolution: Tuple[int, int], num_heads: int,
                 window_size: int = 8, shift_size: int = 0, mlp_ratio: float = 4.0):
        super().__init__()
        self.input_resolution = tuple(int(v) for v in input_resolution)
        if min(self.input_resolution) <= window_size:  # SwinIR: one window, no shift
            shift_size, window_size = 0, min(self.input_resolution)
        self.window_size, self.shift_size = window_size, shift_size
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window_size, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        mask = (shifted_window_mask(*self.input_resolution, window_size, shift_size)
                if shift_size else None)
        self.register_buffer("attn_mask", mask)  # persistent, as in SwinIR checkpoints

    def forward(self, x: Tensor, size: Tuple[int, int]) -> Tensor:
        H, W = size
        B, L, C = x.shape
        ws, s = self.window_size, self.shift_size
        h = self.norm1(x).view(B, H, W, C)
        if s:
            h = torch.roll(h, shifts=(-s, -s), dims=(1, 2))
        mask = None
        if s:
            mask = self.attn_mask if (H, W) == self.input_resolution else \
                shifted_window_mask(H, W, ws, s).to(x.device)
        h = window_reverse(self.attn(window_partition(h, ws), mask=mask), ws, H, W)
        if s:
            h = torch.roll(h, shifts=(s, s), dims=(1, 2))
        x = x + h.reshape(B, L, C)
        return x + self.mlp(self.norm2(x))


class SwinLayer(nn.Module):
    """``depth`` Swin blocks alternating shift 0 and window/2 (SwinIR ``BasicLayer``)."""

    def __init__(self, dim: int, input_resolution: Tuple[int, int], depth: int, num_heads: int,
                 window_size: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.blocks = nn.ModuleList([
            SwinTransformerBlock(dim, input_resolution, num_heads, window_size,
                                 0 if i % 2 == 0 else window_size // 2, mlp_ratio)
            for i in range(depth)])

    def forward(self, x: Tensor, size: Tuple[int, int]) -> Tensor:
        for blk in self.blocks:
            x = blk(x, size)
        return x


class RSTB(nn.Module):
    """Residual Swin Transformer block on a feature map: ``x + conv3x3(swin_layer(x))``."""

    def __init__(self, dim: int, input_resolution: Sequence[int], depth: int, num_heads: int = 8,
                 window_size: int = 8, mlp_ratio: float = 4.0):
        super().__init__()
        self.residual_group = SwinLayer(dim, tuple(input_resolution), depth, num_heads,
                                        window_size, mlp_ratio)
        self.conv = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        B, C, H, W = x.shape
        t = self.residual_group(x.flatten(2).transpose(1, 2), (H, W))
        return x + self.conv(t.transpose(1, 2).reshape(B, C, H, W))


def pad_to_window(fn: Callable[[Tensor], Tensor], x: Tensor, window: int) -> Tensor:
    """Run ``fn`` on ``x`` reflect-padded (bottom/right) to multiples of ``window``; crop back."""
    H, W = x.shape[-2:]
    ph = math.ceil(H / window) * window - H
    pw = math.ceil(W / window) * window - W
    if ph == 0 and pw == 0:
        return fn(x)
    mode = "reflect" if (ph < H and pw < W) else "replicate"
    return fn(F.pad(x, (0, pw, 0, ph), mode=mode))[..., :H, :W]
