"""PatchGAN discriminator.

Isola et al., "Image-to-Image Translation with Conditional Adversarial Networks" (pix2pix),
CVPR 2017; as used by taming-transformers' VQGAN (``NLayerDiscriminator``), whose parameter names
(``main.{i}.*``) and N(0, 0.02) conv initialisation we keep.

Layout for ``n_layers=3, ndf=64`` (indices of ``main``)::

    0 conv4 s2 (input_nc -> 64), 1 lrelu
    2 conv4 s2 (64 -> 128),  3 norm, 4 lrelu
    5 conv4 s2 (128 -> 256), 6 norm, 7 lrelu
    8 conv4 s1 (256 -> 512), 9 norm, 10 lrelu
    11 conv4 s1 (512 -> 1)                     one logit per ~70x70 patch

A 256 x 256 input gives a 30 x 30 logit map. With ``norm="none"`` the norm slots hold
``nn.Identity`` so the indices (and checkpoint keys) stay the same; convs then have biases.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ...utils.registry import SUBNETS

NORMS = ("batch", "actnorm", "none")


class ActNorm(nn.Module):
    """Per-channel affine ``scale * (x + loc)``, initialised from the first training batch so the
    output has zero mean and unit variance (Kingma & Dhariwal, "Glow", NeurIPS 2018)."""

    def __init__(self, num_features: int):
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(1, num_features, 1, 1))
        self.scale = nn.Parameter(torch.ones(1, num_features, 1, 1))
        self.register_buffer("initialized", torch.tensor(0, dtype=torch.uint8))

    @torch.no_grad()
    def _initialize(self, x: torch.Tensor) -> None:
        flat = x.transpose(0, 1).reshape(x.shape[1], -1)
        self.loc.copy_(-flat.mean(1).view(1, -1, 1, 1))
        self.scale.copy_(1.0 / (flat.std(1).view(1, -1, 1, 1) + 1e-6))
        self.initialized.fill_(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and int(self.initialized) == 0:
            self._initialize(x)
        return self.scale * (x + self.loc)


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "actnorm":
        return ActNorm(channels)
    return nn.Identity()


def init_weights(m: nn.Module) -> None:
    """Conv weights N(0, 0.02); BatchNorm weights N(1, 0.02), biases 0 (as taming's VQGAN loss)."""
    if isinstance(m, nn.Conv2d):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


@SUBNETS.register("PatchGANDiscriminator")
class PatchGANDiscriminator(nn.Module):
    """PatchGAN (taming ``NLayerDiscriminator`` layout).

    Args:
        input_nc: input channels (3 for images; DC-VIC feeds image + 8 beta channels = 11).
        ndf: width of the first layer (doubled per layer up to 8x).
        n_layers: number of stride-2 convs.
        norm: ``"batch"`` (taming default), ``"actnorm"`` or ``"none"``.
        use_actnorm: taming's flag; True means ``norm="actnorm"``.
        out_nc: logits per position (1 real/fake; 257 for DC-VIC's OASIS discriminator).
        keep_shape: the two stride-1 convs use 3x3 kernels, so the logit map is exactly
            H/2^n_layers x W/2^n_layers (the VQ grid for n_layers=3), as the DC-VIC reference's
            ``keep_shape``.
        weight_init: apply :func:`init_weights` (off for subclasses that add layers first).
    """

    def __init__(self, input_nc: int = 3, ndf: int = 64, n_layers: int = 3, norm: str = "batch",
                 use_actnorm: Optional[bool] = None, out_nc: int = 1, keep_shape: bool = False,
                 weight_init: bool = True):
        super().__init__()
        if use_actnorm:
            norm = "actnorm"
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r}; valid: {', '.join(NORMS)}")
        bias = norm != "batch"
        layers = [nn.Conv2d(input_nc, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2 ** n, 8)
            last = n == n_layers
            kernel = 3 if (last and keep_shape) else 4
            layers += [nn.Conv2d(ndf * prev, ndf * mult, kernel, stride=1 if last else 2, padding=1, bias=bias),
                       _norm(norm, ndf * mult), nn.LeakyReLU(0.2, True)]
        layers.append(nn.Conv2d(ndf * mult, out_nc, 3 if keep_shape else 4, stride=1, padding=1))
        self.main = nn.Sequential(*layers)
        if weight_init:
            self.apply(init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, input_nc, H, W) -> (B, out_nc, h, w) patch logits."""
        return self.main(x)
