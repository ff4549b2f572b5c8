"""Adversarial losses for a patch (or global) discriminator.

Call convention (shared with :class:`src.losses.oasis.OASISLoss`)::

    d_loss = 0.5 * (gan(d_real, is_real=True, is_disc=True)
                    + gan(d_fake, is_real=False, is_disc=True))
    g_loss = gan(d_of_fake, is_real=True, is_disc=False)

``loss_weight`` scales the generator term only (the discriminator's loss is
optimised on its own, so its scale is left at 1). ``pred`` may be a tensor of
logits of any shape (N, ...) or a list of them (multi-scale discriminators,
averaged).
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from src.utils.registry import LOSSES

from .weighting import check_reduction, reduce_batch

Pred = Union[torch.Tensor, Sequence[torch.Tensor]]


class _GANLossBase(nn.Module):
    """Reduction, weighting and list handling; subclasses define :meth:`elementwise`."""

    def __init__(self, loss_weight: float = 1.0, reduction: str = "mean"):
        super().__init__()
        self.loss_weight = float(loss_weight)
        self.reduction = check_reduction(reduction)

    def elementwise(self, pred: torch.Tensor, is_real: bool, is_disc: bool) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, pred: Pred, is_real: bool, is_disc: bool = False,
                sample_weight: Optional[torch.Tensor] = None) -> torch.Tensor:
        preds = [pred] if torch.is_tensor(pred) else list(pred)
        if not preds:
            raise ValueError("empty list of discriminator outputs")
        losses = [reduce_batch(self.elementwise(p, is_real, is_disc), self.reduction, sample_weight)
                  for p in preds]
        loss = sum(losses) / len(losses)
        return loss if is_disc else self.loss_weight * loss


@LOSSES.register()
class VanillaGANLoss(_GANLossBase):
    """Binary cross-entropy on logits (Goodfellow et al. 2014), non-saturating
    for the generator: target 1 for real, 0 for fake."""

    def elementwise(self, pred: torch.Tensor, is_real: bool, is_disc: bool) -> torch.Tensor:
        target = torch.full_like(pred, 1.0 if is_real else 0.0)
        return F.binary_cross_entropy_with_logits(pred, target, reduction="none")


@LOSSES.register()
class HingeGANLoss(_GANLossBase):
    """Hinge loss (Lim & Ye 2017): D minimises ``relu(1 - d_real) + relu(1 + d_fake)``,
    G minimises ``-d_fake`` (called with ``is_real=True``)."""

    def elementwise(self, pred: torch.Tensor, is_real: bool, is_disc: bool) -> torch.Tensor:
        if is_disc:
            return F.relu(1.0 - pred) if is_real else F.relu(1.0 + pred)
        return -pred if is_real else pred
