"""ELIC residual bottleneck blocks and the simplified attention module.

* He et al., "ELIC: Efficient Learned Image Compression with Unevenly Grouped Space-Channel
  Contextual Adaptive Coding", CVPR 2022 (supplementary material: the analysis/synthesis
  transforms built from residual bottleneck blocks and attention).
* Cheng et al., "Learned Image Compression with Discretized Gaussian Mixture Likelihoods and
  Attention Modules", CVPR 2020 (the simplified attention module used by ELIC).

Attribute names follow the DC-VIC reference (``block{i}.conv.{0,2,4}``, ``trunk_block``,
``attention_block``, ``c1/c2/c3``) so that its checkpoints load strictly.

Residual bottleneck block::

    x -> 1x1 (ch -> mid) -> ReLU -> 3x3 (mid) -> ReLU -> 1x1 (mid -> ch) -> + x

Attention::

    x -> trunk (3 res units) ---------------------------.
    x -> branch (3 res units) -> 1x1 -> sigmoid -> * ----+-> + x
"""
from __future__ import annotations

from torch import Tensor, nn


class BottleneckBlock(nn.Module):
    """1x1 -> 3x3 -> 1x1 residual bottleneck (ELIC)."""

    def __init__(self, ch: int, mid_ch: int):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(ch, mid_ch, kernel_size=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid_ch, mid_ch, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid_ch, ch, kernel_size=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x)


class ResidualBottleneckBlocks(nn.Module):
    """``num_blocks`` bottleneck blocks in sequence (``block0``, ``block1``, ...)."""

    def __init__(self, ch: int, mid_ch: int, num_blocks: int = 3, res_in_res: bool = False):
        super().__init__()
        self.num_blocks = num_blocks
        self.res_in_res = res_in_res
        for i in range(num_blocks):
            setattr(self, f"block{i}", BottleneckBlock(ch, mid_ch))

    def forward(self, x: Tensor) -> Tensor:
        y = x
        for i in range(self.num_blocks):
            y = getattr(self, f"block{i}")(y)
        return x + y if self.res_in_res else y


class AttentionResUnit(nn.Module):
    """Residual unit of the attention module: 1x1 (ch/2) -> 3x3 -> 1x1 (ch), ReLU between."""

    def __init__(self, ch: int):
        super().__init__()
        mid = ch // 2
        self.c1 = nn.Conv2d(ch, mid, kernel_size=1)
        self.c2 = nn.Conv2d(mid, mid, kernel_size=3, padding=1)
        self.c3 = nn.Conv2d(mid, ch, kernel_size=1)
        self.actv = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        out = self.actv(self.c1(x))
        out = self.actv(self.c2(out))
        return x + self.c3(out)


class SimplifiedAttention(nn.Module):
    """Cheng 2020 simplified attention: ``x + trunk(x) * sigmoid(conv(branch(x)))``."""

    def __init__(self, ch: int):
        super().__init__()
        self.trunk_block = nn.Sequential(*[AttentionResUnit(ch) for _ in range(3)])
        self.attention_block = nn.Sequential(*[AttentionResUnit(ch) for _ in range(3)])
        self.conv = nn.Conv2d(ch, ch, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        attn = (self.conv(self.attention_block(x))).sigmoid()
        return x + self.trunk_block(x) * attn


def down_conv(in_ch: int, out_ch: int) -> nn.Conv2d:
    """5x5 stride-2 convolution (halves H and W)."""
    return nn.Conv2d(in_ch, out_ch, kernel_size=5, stride=2, padding=2)


def up_conv(in_ch: int, out_ch: int, pixel_shuffle: bool = False) -> nn.Module:
    """5x5 stride-2 transposed convolution (doubles H and W), or conv + PixelShuffle."""
    if pixel_shuffle:
        return nn.Sequential(nn.Conv2d(in_ch, out_ch * 4, 5, padding=2), nn.PixelShuffle(2))
    return nn.ConvTranspose2d(in_ch, out_ch, 5, stride=2, padding=2, output_padding=1)
