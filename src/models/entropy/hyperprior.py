"""Hyper-analysis and hyper-synthesis transforms of Minnen et al. 2020.

Minnen & Singh, "Channel-wise Autoregressive Entropy Models for Learned Image Compression",
ICIP 2020. Names and sizes follow the DC-VIC reference (``conv1..3``, ``hd_mu``, ``hd_std``).

    h_a: y (Cy, H/16) -> conv3x3 (320) -> ReLU -> conv5x5/2 (256) -> ReLU -> conv5x5/2 (Cz) = z (H/64)
    h_s: z -> [hd_mu | hd_std], each: deconv5x5/2 (192) -> ReLU -> deconv5x5/2 (256) -> ReLU
                                      -> deconv3x3 (hyper_out/2)
         hyper_out = cat([means_feat, scales_feat]) (hyper_out_ch, H/16)

``hidden_chs`` only exists to build narrow models for tests; the defaults are the reference sizes.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from src.models.entropy.exact import run_exact
from src.utils.registry import SUBNETS


@SUBNETS.register()
class Minnen20HyperEncoder(nn.Module):
    def __init__(self, bottleneck_y: int = 320, bottleneck_z: int = 192,
                 hidden_chs: Sequence[int] = (320, 256)):
        super().__init__()
        c1, c2 = hidden_chs
        self.activation = nn.ReLU()
        self.conv1 = nn.Conv2d(bottleneck_y, c1, kernel_size=3, stride=1, padding=1)
        self.conv2 = nn.Conv2d(c1, c2, kernel_size=5, stride=2, padding=2)
        self.conv3 = nn.Conv2d(c2, bottleneck_z, kernel_size=5, stride=2, padding=2)

    def forward(self, y: Tensor) -> Tensor:
        x = self.activation(self.conv1(y))
        x = self.activation(self.conv2(x))
        return self.conv3(x)


class HyperDecoderBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, hidden_chs: Sequence[int] = (192, 256)):
        super().__init__()
        c1, c2 = hidden_chs
        up = dict(kernel_size=5, stride=2, padding=2, output_padding=1)
        self.activation = nn.ReLU()
        self.conv1 = nn.ConvTranspose2d(in_ch, c1, **up)
        self.conv2 = nn.ConvTranspose2d(c1, c2, **up)
        self.conv3 = nn.ConvTranspose2d(c2, out_ch, kernel_size=3, stride=1, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        x = self.activation(self.conv1(z))
        x = self.activation(self.conv2(x))
        return self.conv3(x)

    def layers(self):
        return self.conv1, self.activation, self.conv2, self.activation, self.conv3


@SUBNETS.register()
class Minnen20HyperDecoder(nn.Module):
    def __init__(self, bottleneck_z: int = 192, hyper_out_ch: int = 640,
                 hidden_chs: Sequence[int] = (192, 256)):
        super().__init__()
        if hyper_out_ch % 2:
            raise ValueError(f"hyper_out_ch must be even (means + scales), got {hyper_out_ch}")
        self.hd_mu = HyperDecoderBlock(bottleneck_z, hyper_out_ch // 2, hidden_chs)
        self.hd_std = HyperDecoderBlock(bottleneck_z, hyper_out_ch // 2, hidden_chs)

    def forward(self, z_hat: Tensor) -> Tensor:
        return torch.cat([self.hd_mu(z_hat), self.hd_std(z_hat)], dim=1)

    def exact(self, z_hat: Tensor) -> Tensor:
        """``forward`` in exact integer arithmetic (float64 values on the grid of
        :mod:`src.models.entropy.exact`): the same bits on every machine, for coding."""
        return torch.cat([run_exact(self.hd_mu.layers(), z_hat), run_exact(self.hd_std.layers(), z_hat)], dim=1)
