"""Rate term: bits per pixel from the entropy models' likelihoods."""
from __future__ import annotations

import math
from typing import Mapping, Optional, Union

import torch
from torch import nn

from src.utils.registry import LOSSES

from .weighting import check_reduction, reduce_batch


def bpp_from_likelihoods(likelihoods: Mapping[str, torch.Tensor], num_pixels: int) -> torch.Tensor:
    """Estimated bits per pixel of each sample: ``sum(-log2 p) / num_pixels``.

    Args:
        likelihoods: e.g. ``{"y": (N, C, h, w), "z": (N, C, h', w')}`` as a
            compressai model returns; every entry is summed.
        num_pixels: H * W of the input image (the padded size is what the model
            sees during training; at test time use the original size).

    Returns:
        (N,) tensor of bpp.
    """
    if not likelihoods:
        raise ValueError("likelihoods is empty")
    bits = sum(-torch.log(p).flatten(1).sum(dim=1) for p in likelihoods.values())
    return bits / (math.log(2.0) * num_pixels)


@LOSSES.register()
class RateLoss(nn.Module):
    """``loss_weight * bpp`` with the package's reduction rule.

    ``forward(likelihoods, num_pixels)`` computes the bpp from a likelihoods dict;
    ``forward(bpp)`` takes an (N,) or scalar bpp tensor directly.
    """

    def __init__(self, loss_weight: float = 1.0, reduction: str = "mean"):
        super().__init__()
        self.loss_weight = float(loss_weight)
        self.reduction = check_reduction(reduction)

    def forward(self, likelihoods: Union[Mapping[str, torch.Tensor], torch.Tensor],
                num_pixels: Optional[int] = None,
                sample_weight: Optional[torch.Tensor] = None) -> torch.Tensor:
        if isinstance(likelihoods, Mapping):
            if num_pixels is None:
                raise ValueError("RateLoss needs num_pixels (H * W of the image) with a likelihoods dict")
            bpp = bpp_from_likelihoods(likelihoods, num_pixels)
        else:
            bpp = likelihoods
        return self.loss_weight * reduce_batch(bpp, self.reduction, sample_weight)
