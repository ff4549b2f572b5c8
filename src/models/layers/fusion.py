"""GroupNorm residual blocks and SFT fusion of codec features into the VQGAN decoder.

* Wang et al., "Recovering Realistic Texture in Image Super-resolution by Deep Spatial Feature
  Transform", CVPR 2018 (SFT: spatial scale and shift).
* Zhou et al., "Towards Robust Blind Face Restoration with Codebook Lookup Transformer"
  (CodeFormer), NeurIPS 2022 (the fusion block: ``dec + w * (dec * scale + shift)``).
* Chen et al., "Real-World Blind Super-Resolution via Feature Matching with Implicit
  High-Resolution Priors" (FeMaSR), ACM MM 2022 (pre-activation residual block).

SFT fusion::

    [cond ; dec] -> GNResBlock (cond+dec -> mid) -> scale (3x3, LReLU, 3x3) ----.
                                                 -> shift (3x3, LReLU, 3x3) ----+
    out = dec + w * (dec * scale + shift)

Names follow the DC-VIC reference (``fuse_block.norm1``, ``scale.0``, ``conv.0.norm`` ...).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import lean


def group_norm32(ch: int) -> nn.GroupNorm:
    """32-group GroupNorm, eps 1e-6 (``ch`` must be a multiple of 32)."""
    if ch % 32:
        raise ValueError(f"GroupNorm with 32 groups needs a multiple of 32 channels, got {ch}")
    return nn.GroupNorm(num_groups=32, num_channels=ch, eps=1e-6, affine=True)


class GNResBlock(nn.Module):
    """(GN, swish, conv3x3) x 2 with a 1x1 ``conv_out`` shortcut when widths differ (CodeFormer)."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.norm1 = group_norm32(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.norm2 = group_norm32(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        if in_ch != out_ch:
            self.conv_out = nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x: Tensor) -> Tensor:
        if lean.lean_enabled(self):  # inference: strips, one extra feature map (lean.py)
            return lean.resblock(x, self.norm1, self.conv1, self.norm2, self.conv2, getattr(self, "conv_out", None))
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        skip = self.conv_out(x) if hasattr(self, "conv_out") else x
        return skip + h


class _Norm(nn.Module):
    """Holds the norm under ``.norm`` (FeMaSR ``NormLayer`` naming)."""

    def __init__(self, ch: int):
        super().__init__()
        self.norm = group_norm32(ch)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x)


class PreActResBlock(nn.Module):
    """FeMaSR residual block ``x + conv(act(GN(conv(act(GN(x))))))`` with equal widths."""

    def __init__(self, ch: int, act: str = "silu"):
        super().__init__()
        acts = {"silu": nn.SiLU, "relu": nn.ReLU, "gelu": nn.GELU,
                "leakyrelu": lambda: nn.LeakyReLU(0.2)}
        if act not in acts:
            raise ValueError(f"unknown activation {act!r}; known: {sorted(acts)}")
        self.conv = nn.Sequential(
            _Norm(ch), acts[act](), nn.Conv2d(ch, ch, 3, padding=1),
            _Norm(ch), acts[act](), nn.Conv2d(ch, ch, 3, padding=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x)


def _affine_branch(mid_ch: int, dec_ch: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(mid_ch, dec_ch, 3, padding=1), nn.LeakyReLU(0.2, True),
                         nn.Conv2d(dec_ch, dec_ch, 3, padding=1))


class FuseSftBlock(nn.Module):
    """Fuse a codec feature into a decoder feature of the same size by spatial scale/shift."""

    def __init__(self, cond_ch: int, dec_ch: int, mid_ch: int):
        super().__init__()
        self.fuse_block = GNResBlock(cond_ch + dec_ch, mid_ch)
        self.scale = _affine_branch(mid_ch, dec_ch)
        self.shift = _affine_branch(mid_ch, dec_ch)

    def forward(self, dec_feat: Tensor, cond_feat: Tensor, w: float = 1.0) -> Tensor:
        fused = self.fuse_block(torch.cat([cond_feat, dec_feat], dim=1))
        if lean.lean_enabled(self):
            return self._modulate_in_strips(dec_feat, fused, w)
        return dec_feat + w * (dec_feat * self.scale(fused) + self.shift(fused))

    def _modulate_in_strips(self, dec: Tensor, fused: Tensor, w: float) -> Tensor:
        """The last line of ``forward`` row strip by row strip (inference): each branch's two 3x3
        convs need two halo rows of ``fused``, so no full-size scale or shift map exists."""
        h = dec.shape[2]
        out = torch.empty_like(dec)
        rows = lean.strip_rows(fused, 4)
        for r0 in range(0, h, rows):
            r1 = min(h, r0 + rows)
            m0, m1 = max(0, r0 - 1), min(h, r1 + 1)
            scale, shift = (
                lean.conv_rows(F.leaky_relu(lean.conv_rows(fused, 0, h, branch[0], m0, m1), 0.2), m0, h,
                               branch[2], r0, r1)
                for branch in (self.scale, self.shift))
            d = dec[:, :, r0:r1]
            out[:, :, r0:r1] = d + w * (d * scale + shift)
        lean.release_freed_memory(out)
        return out
