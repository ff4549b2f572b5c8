"""Pixel and latent distortion terms (mean squared error)."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from src.utils.registry import LOSSES

from .weighting import check_reduction, reduce_batch

_MSE_SCALES = {"0_1": 1.0, "0_255": 255.0 ** 2}


@LOSSES.register()
class VanillaMSELoss(nn.Module):
    """Plain MSE between two tensors, e.g. the VQ latent and its estimate.

    ``reduction="none"`` gives the per-sample MSE, shape (N,), for per-sample
    beta weights.
    """

    def __init__(self, loss_weight: float = 1.0, reduction: str = "mean"):
        super().__init__()
        self.loss_weight = float(loss_weight)
        self.reduction = check_reduction(reduction)

    def forward(self, target: torch.Tensor, pred: torch.Tensor,
                sample_weight: Optional[torch.Tensor] = None) -> torch.Tensor:
        if target.shape != pred.shape:
            raise ValueError(f"shape mismatch: {tuple(target.shape)} vs {tuple(pred.shape)}")
        err = (pred - target).pow(2)
        return self.loss_weight * reduce_batch(err, self.reduction, sample_weight)


@LOSSES.register()
class MSELoss(VanillaMSELoss):
    """Image MSE.

    Args:
        normalize_img: inputs are in [-1, 1]; map them to [0, 1] first
            (``(x + 1) / 2``, which divides the MSE by 4).
        mse_scale: ``"0_1"`` keeps the MSE on the [0, 1] scale, ``"0_255"``
            reports it on the 8-bit scale (times 255^2).
    """

    def __init__(self, loss_weight: float = 1.0, reduction: str = "mean",
                 normalize_img: bool = False, mse_scale: str = "0_1"):
        super().__init__(loss_weight, reduction)
        if mse_scale not in _MSE_SCALES:
            raise ValueError(f"mse_scale must be one of {sorted(_MSE_SCALES)}, got {mse_scale!r}")
        self.normalize_img = bool(normalize_img)
        self.mse_scale = mse_scale

    def forward(self, target: torch.Tensor, pred: torch.Tensor,
                sample_weight: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.normalize_img:
            target, pred = (target + 1) / 2, (pred + 1) / 2
        return _MSE_SCALES[self.mse_scale] * super().forward(target, pred, sample_weight)
