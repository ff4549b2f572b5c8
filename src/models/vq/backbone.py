"""Convolutional encoder/decoder of VQGAN.

Esser, Rombach & Ommer, "Taming Transformers for High-Resolution Image Synthesis", CVPR 2021;
the same networks serve as first stage of Rombach et al., "High-Resolution Image Synthesis with
Latent Diffusion Models", CVPR 2022.

Layer sizes and attribute names follow the published checkpoints, so that their state dicts load
strictly: ``conv_in``, ``down.{level}.block.{j}`` / ``.attn.{j}`` / ``.downsample.conv``,
``mid.block_1`` / ``mid.attn_1`` / ``mid.block_2``, ``up.{level}.block.{j}`` / ``.attn.{j}`` /
``.upsample.conv``, ``norm_out``, ``conv_out``. A level is a resolution: level ``i`` works at
``1 / 2**i`` of the image size; ``up`` is indexed by level too (``up.0`` is the full-resolution
stage, run last).

Data flow (f8, ch_mult (1, 2, 2, 4), ch 128)::

    Encoder: x (3, H) -> conv_in -> level 0 (128, H) -> level 1 (256, H/2) -> level 2 (256, H/4)
             -> level 3 (512, H/8) -> mid -> norm, swish, conv_out -> z (z_channels, H/8)
    Decoder: z -> conv_in (512) -> mid -> level 3 (512, H/8) -up-> level 2 (256, H/4) -up->
             level 1 (256, H/2) -up-> level 0 (128, H) -> norm, swish, conv_out -> x_hat
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from src.models.layers import lean

FeatureHook = Callable[[int, torch.Tensor], torch.Tensor]


def group_norm(channels: int) -> nn.GroupNorm:
    """32-group GroupNorm with eps 1e-6, as in the published VQGAN."""
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    """(GN, swish, conv3x3) twice plus a residual; a 1x1 ``nin_shortcut`` when widths differ."""

    def __init__(self, in_channels: int, out_channels: Optional[int] = None, dropout: float = 0.0):
        super().__init__()
        out_channels = out_channels or in_channels
        self.norm1 = group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = group_norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if lean.lean_enabled(self):  # inference: strips, one extra feature map (layers/lean.py)
            return lean.resblock(x, self.norm1, self.conv1, self.norm2, self.conv2,
                                 getattr(self, "nin_shortcut", None))
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        skip = self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x
        return skip + h


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with 1x1 projections ``q, k, v, proj_out``."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = group_norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        y = self.norm(x)
        # (B, 1, HW, C) tokens; softmax(q k^T / sqrt(C)) v
        q, k, v = (p(y).flatten(2).transpose(1, 2).unsqueeze(1) for p in (self.q, self.k, self.v))
        out = lean.attention_in_chunks(q, k, v) if lean.lean_enabled(self) else F.scaled_dot_product_attention(q, k, v)
        out = out.squeeze(1).transpose(1, 2).reshape(b, c, h, w)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    """Stride-2 3x3 conv after zero padding right/bottom by one pixel (no padding in the conv)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if lean.lean_enabled(self):
            return lean.pad_downsample_conv(x, self.conv)
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest-neighbour x2, then a 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if lean.lean_enabled(self):
            return lean.upsample_conv(x, self.conv)
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _level(blocks: Sequence[nn.Module], attns: Sequence[nn.Module]) -> nn.Module:
    level = nn.Module()
    level.block = nn.ModuleList(blocks)
    level.attn = nn.ModuleList(attns)
    return level


def _run_level(level: nn.Module, h: torch.Tensor) -> torch.Tensor:
    for i, block in enumerate(level.block):
        h = block(h)
        if len(level.attn) > 0:
            h = level.attn[i](h)
    return h


def _mid(channels: int, dropout: float) -> nn.Module:
    mid = nn.Module()
    mid.block_1 = ResnetBlock(channels, channels, dropout)
    mid.attn_1 = AttnBlock(channels)
    mid.block_2 = ResnetBlock(channels, channels, dropout)
    return mid


class Encoder(nn.Module):
    """Image -> latent at ``1 / 2**(len(ch_mult) - 1)`` resolution, ``z_channels`` channels
    (twice that with ``double_z``).

    ``resolution`` is the nominal training size: attention is placed at the levels whose nominal
    size is in ``attn_resolutions``; the network itself runs on any size divisible by the factor.
    """

    def __init__(self, *, ch: int, ch_mult: Sequence[int], num_res_blocks: int,
                 attn_resolutions: Sequence[int], in_channels: int, resolution: int,
                 z_channels: int, double_z: bool = False, dropout: float = 0.0):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)
        self.down = nn.ModuleList()
        block_in, res = ch, resolution
        for i_level, mult in enumerate(ch_mult):
            blocks, attns = [], []
            for _ in range(num_res_blocks):
                blocks.append(ResnetBlock(block_in, ch * mult, dropout))
                block_in = ch * mult
                if res in attn_resolutions:
                    attns.append(AttnBlock(block_in))
            level = _level(blocks, attns)
            if i_level != len(ch_mult) - 1:
                level.downsample = Downsample(block_in)
                res //= 2
            self.down.append(level)
        self.mid = _mid(block_in, dropout)
        self.norm_out = group_norm(block_in)
        z_out = 2 * z_channels if double_z else z_channels
        self.conv_out = nn.Conv2d(block_in, z_out, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = _run_level(level, h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        return _head(h, self.norm_out, self.conv_out)


def _head(h: torch.Tensor, norm: nn.GroupNorm, conv: nn.Conv2d) -> torch.Tensor:
    """``conv(silu(norm(h)))``, in strips without autograd."""
    if not torch.is_grad_enabled():
        return lean.norm_silu_conv(h, norm, conv)
    return conv(F.silu(norm(h)))


class Decoder(nn.Module):
    """Latent -> image; mirror of :class:`Encoder` with ``num_res_blocks + 1`` blocks per level.

    ``forward(z, feature_hook)`` lets a caller read or replace the features of each up-level:
    ``h = feature_hook(i_level, h)`` runs after the blocks of level ``i_level`` and before its
    upsampling, for ``i_level`` = ``len(ch_mult) - 1`` down to 0 (coarsest first). For f8 with
    ch 128, ch_mult (1, 2, 2, 4): level 3 at H/8 with 512 channels, 2 at H/4 with 256,
    1 at H/2 with 256, 0 at H with 128.
    """

    def __init__(self, *, ch: int, out_ch: int, ch_mult: Sequence[int], num_res_blocks: int,
                 attn_resolutions: Sequence[int], resolution: int, z_channels: int,
                 dropout: float = 0.0):
        super().__init__()
        n = len(ch_mult)
        block_in = ch * ch_mult[-1]
        res = resolution // 2 ** (n - 1)
        self.conv_in = nn.Conv2d(z_channels, block_in, 3, padding=1)
        self.mid = _mid(block_in, dropout)
        levels = []
        for i_level in reversed(range(n)):
            blocks, attns = [], []
            for _ in range(num_res_blocks + 1):
                blocks.append(ResnetBlock(block_in, ch * ch_mult[i_level], dropout))
                block_in = ch * ch_mult[i_level]
                if res in attn_resolutions:
                    attns.append(AttnBlock(block_in))
            level = _level(blocks, attns)
            if i_level != 0:
                level.upsample = Upsample(block_in)
                res *= 2
            levels.insert(0, level)
        self.up = nn.ModuleList(levels)
        self.norm_out = group_norm(block_in)
        self.conv_out = nn.Conv2d(block_in, out_ch, 3, padding=1)

    def level_channels(self) -> dict:
        """Channels of the features handed to ``feature_hook``, by level."""
        return {i: level.block[-1].conv2.out_channels for i, level in enumerate(self.up)}

    def forward(self, z: torch.Tensor, feature_hook: Optional[FeatureHook] = None) -> torch.Tensor:
        h = self.conv_in(z)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        for i_level in reversed(range(len(self.up))):
            level = self.up[i_level]
            h = _run_level(level, h)
            if feature_hook is not None:
                h = feature_hook(i_level, h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return _head(h, self.norm_out, self.conv_out)
