"""Beta conditioning for discriminators, and the OASIS per-pixel discriminator.

DC-VIC's discriminators see the two betas of each sample as 8 constant channels beside
the image: each beta is normalised to [-1, 1] and expanded into
``(v, sin(pi v), cos(pi v), sin(2 pi v))``.

OASIS (Sushko et al., "You Only Need Adversarial Supervision for Semantic Image
Synthesis", ICLR 2021) replaces the real/fake score by a per-pixel (N+1)-way
classification; as in MS-ILLM (Muckley et al. 2023) the N classes are the VQ codes of
the real image (here 256) and class N is "fake".
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import spectral_norm

from src.utils.registry import SUBNETS

NUM_BETA_CHANNELS = 8


def beta_channels(beta_rate: Tensor, beta_vq: Tensor, max_beta_rate: float, max_beta_vq: float,
                  height: int, width: int) -> Tensor:
    """(B,) betas -> (B, 8, height, width) constant feature maps."""
    feats = []
    for beta, top in ((beta_rate, max_beta_rate), (beta_vq, max_beta_vq)):
        v = 2.0 * beta.float() / top - 1.0
        feats += [v, torch.sin(math.pi * v), torch.cos(math.pi * v), torch.sin(2 * math.pi * v)]
    maps = torch.stack(feats, dim=1)[:, :, None, None]
    return maps.expand(-1, -1, height, width)


@SUBNETS.register()
class BetaConditionedDiscriminator(nn.Module):
    """Wraps a discriminator built from ``net`` whose input is image + 8 beta channels."""

    def __init__(self, net: dict, max_beta_rate: float = 3.0, max_beta_vq: float = 3.5):
        super().__init__()
        net = dict(net)
        net.setdefault("input_nc", 3 + NUM_BETA_CHANNELS)
        self.net = SUBNETS.build(net)
        self.max_beta_rate, self.max_beta_vq = float(max_beta_rate), float(max_beta_vq)

    def forward(self, x: Tensor, beta_rate: Optional[Tensor] = None, beta_vq: Optional[Tensor] = None) -> Tensor:
        if beta_rate is None or beta_vq is None:
            raise ValueError("a beta-conditioned discriminator needs beta_rate and beta_vq")
        cond = beta_channels(beta_rate.to(x.device), beta_vq.to(x.device), self.max_beta_rate, self.max_beta_vq,
                             x.shape[2], x.shape[3]).to(x.dtype)
        return self.net(torch.cat([x, cond], dim=1))


class _ResBlock(nn.Module):
    """Spectral-normalised residual block, optionally changing resolution (OASIS D blocks)."""

    def __init__(self, cin: int, cout: int, resample: str = "none"):
        super().__init__()
        self.resample = resample
        self.conv1 = spectral_norm(nn.Conv2d(cin, cout, 3, padding=1))
        self.conv2 = spectral_norm(nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = spectral_norm(nn.Conv2d(cin, cout, 1)) if cin != cout else nn.Identity()

    def _resize(self, x: Tensor) -> Tensor:
        if self.resample == "down":
            return F.avg_pool2d(x, 2)
        if self.resample == "up":
            return F.interpolate(x, scale_factor=2, mode="nearest")
        return x

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.leaky_relu(x, 0.2))
        h = self.conv2(F.leaky_relu(h, 0.2))
        return self._resize(h + self.skip(x))


@SUBNETS.register()
class OASISDiscriminator(nn.Module):
    """U-Net discriminator: ``input_nc`` channels in, ``num_classes + 1`` logits per pixel out.

    ``channels`` lists the encoder widths (one downsampling block each); the decoder mirrors
    them with skip connections and returns logits at the input resolution.
    """

    def __init__(self, input_nc: int = 3, num_classes: int = 256, channels=(64, 128, 256, 256)):
        super().__init__()
        chs = [input_nc] + list(channels)
        self.down = nn.ModuleList(_ResBlock(chs[i], chs[i + 1], "down") for i in range(len(channels)))
        ups = []
        for i in reversed(range(len(channels))):
            cin = chs[i + 1] * (1 if i == len(channels) - 1 else 2)
            ups.append(_ResBlock(cin, max(chs[i], channels[0]), "up"))
        self.up = nn.ModuleList(ups)
        self.classifier = nn.Conv2d(max(chs[0], channels[0]), num_classes + 1, 1)
        self.num_classes = num_classes

    def forward(self, x: Tensor) -> Tensor:
        skips = []
        h = x
        for block in self.down:
            h = block(h)
            skips.append(h)
        skips.pop()  # the deepest feature is the decoder's input
        for i, block in enumerate(self.up):
            if i > 0:
                h = torch.cat([h, skips.pop()], dim=1)
            h = block(h)
        return self.classifier(h)
