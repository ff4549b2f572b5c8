"""Entropy models with straight-through rounding, built on CompressAI's.

* Balle et al., "Variational Image Compression with a Scale Hyperprior", ICLR 2018
  (factorized ``EntropyBottleneck`` for z, ``GaussianConditional`` for y).
* Minnen, Balle & Toderici, "Joint Autoregressive and Hierarchical Priors", NeurIPS 2018
  (mean-scale Gaussian); Theis et al., "Lossy Image Compression with Compressive Autoencoders",
  ICLR 2017 (straight-through rounding).

CompressAI does the quantisation, the CDF tables and the rANS coding; these subclasses only change
what ``forward`` returns in training (as the DC-VIC reference does)::

    training:  likelihood of (v + U(-1/2, 1/2)),  v_hat = round(v - mu) + mu with identity gradient
    eval:      likelihood of v_hat,                v_hat = round(v - mu) + mu

with mu the medians (z) or the predicted means (y).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from compressai.entropy_models import EntropyBottleneck, GaussianConditional
from torch import Tensor

from src.utils.registry import SUBNETS


def ste_round(x: Tensor) -> Tensor:
    """round(x) in the forward pass, identity gradient in the backward pass."""
    return x + (torch.round(x) - x).detach()


@SUBNETS.register()
class SteEntropyBottleneck(EntropyBottleneck):
    """Factorized prior for z: noisy likelihoods, STE-rounded ``z_hat`` (around the medians)."""

    def __init__(self, channels: int, **kwargs):
        super().__init__(channels, **kwargs)

    def medians(self) -> Tensor:
        """Per-channel medians shaped (1, C, 1, 1)."""
        return self._get_medians().detach().reshape(1, -1, 1, 1)

    def forward(self, x: Tensor, training: Optional[bool] = None) -> Tuple[Tensor, Tensor]:
        training = self.training if training is None else training
        x_q, likelihood = super().forward(x, training=training)
        if not training:
            return x_q, likelihood
        mu = self._get_medians().reshape(1, -1, 1, 1)
        return ste_round(x - mu) + mu, likelihood


@SUBNETS.register()
class SteGaussianMeanScaleConditional(GaussianConditional):
    """Mean-scale Gaussian for y. ``params`` = cat([means, scales], dim=1)."""

    def __init__(self, scale_bound: float = 0.11, scale_table=None, **kwargs):
        super().__init__(scale_table, scale_bound=scale_bound, **kwargs)

    def forward(self, y: Tensor, params: Tensor,
                training: Optional[bool] = None) -> Tuple[Tensor, Tensor]:
        training = self.training if training is None else training
        means, scales = params.chunk(2, dim=1)
        _, likelihood = super().forward(y, scales, means=means, training=training)
        if training:
            y_hat = ste_round(y - means) + means
        else:
            y_hat = self.quantize(y, "dequantize", means=means)
        return y_hat, likelihood
