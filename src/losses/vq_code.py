"""Classification of VQ code indices: focal cross-entropy (Lin et al. 2017)."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from src.utils.registry import LOSSES

from .weighting import check_reduction, reduce_batch


def focal_cross_entropy(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Per-position focal loss ``-(1 - p_t)^gamma * log p_t``.

    Args:
        logits: (N, K, ...) class scores (the torch ``cross_entropy`` layout).
        target: (N, ...) int64 class indices in ``[0, K)``.
        gamma: focusing exponent; 0 gives the plain cross-entropy.

    Returns:
        (N, ...) loss per position.
    """
    log_p = F.log_softmax(logits, dim=1)
    log_pt = log_p.gather(1, target.unsqueeze(1).long()).squeeze(1)
    if gamma == 0:
        return -log_pt
    return -((1.0 - log_pt.exp()).clamp_min(0.0) ** gamma) * log_pt


@LOSSES.register()
class FocalCrossEntropyLoss(nn.Module):
    """Focal cross-entropy on VQ indices; ``reduction="none"`` gives the per-sample
    mean over positions, shape (N,)."""

    def __init__(self, loss_weight: float = 1.0, reduction: str = "mean", gamma: float = 2.0):
        super().__init__()
        self.loss_weight = float(loss_weight)
        self.reduction = check_reduction(reduction)
        self.gamma = float(gamma)

    def forward(self, logits: torch.Tensor, target: torch.Tensor,
                sample_weight: Optional[torch.Tensor] = None) -> torch.Tensor:
        if logits.shape[:1] + logits.shape[2:] != target.shape:
            raise ValueError(f"logits {tuple(logits.shape)} (N, K, ...) do not match "
                             f"target {tuple(target.shape)} (N, ...)")
        loss = focal_cross_entropy(logits, target, self.gamma)
        return self.loss_weight * reduce_batch(loss, self.reduction, sample_weight)


@LOSSES.register()
class CrossEntropyLoss(FocalCrossEntropyLoss):
    """Plain cross-entropy on VQ indices (the focal loss with gamma 0; the
    reference's step 1-3 config names it ``CrossEntropyLoss``)."""

    def __init__(self, loss_weight: float = 1.0, reduction: str = "mean"):
        super().__init__(loss_weight, reduction, gamma=0.0)
