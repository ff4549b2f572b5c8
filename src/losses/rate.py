"""Rate term: bits per pixel from the entropy models' likelihoods (computed by
:func:`src.models.entropy.rate.bpp_from_likelihoods`, re-exported here)."""
from __future__ import annotations

from typing import Mapping, Optional, Union

import torch
from torch import nn

from src.models.entropy.rate import bpp_from_likelihoods
from src.utils.registry import LOSSES

from .weighting import check_reduction, reduce_batch


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
