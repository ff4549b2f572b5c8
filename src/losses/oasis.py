"""Per-pixel (N+1)-class adversarial loss for an OASIS discriminator.

OASIS (Sushko et al., ICLR 2021) replaces the real/fake output of a
discriminator with a per-pixel classifier over N semantic classes plus one
"fake" class. MS-ILLM (Muckley et al. 2023) and DC-VIC use the VQ code indices
as the semantic classes: a real pixel is labelled with the index of the VQ code
covering it, a fake pixel with the extra class.

Labels: the VQ index map (N, H/8, W/8) is nearest-upsampled to the logit
resolution. The fake class is the last channel (index ``num_classes``) unless
``fake_class_first=True``, which puts it at channel 0 and shifts the real
classes to ``1..num_classes`` (the layout of the OASIS code).

Call convention as in :mod:`src.losses.gan`::

    d_loss = 0.5 * (oasis(d_real, idx, is_real=True, is_disc=True)
                    + oasis(d_fake, idx, is_real=False, is_disc=True))
    g_loss = oasis(d_of_fake, idx, is_real=True, is_disc=False)
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from src.utils.registry import LOSSES

from .weighting import check_reduction, reduce_batch


def upsample_labels(indices: torch.Tensor, size) -> torch.Tensor:
    """Nearest-neighbour resize of an (N, h, w) integer map to (N, *size)."""
    if tuple(indices.shape[-2:]) == tuple(size):
        return indices.long()
    up = F.interpolate(indices[:, None].float(), size=tuple(size), mode="nearest")
    return up[:, 0].round().long()


def class_balance_weights(labels: torch.Tensor, num_labels: int) -> torch.Tensor:
    """OASIS class balancing: a pixel of class c gets ``P / (C_present * count_c)``.

    ``P`` is the number of pixels in the batch and ``C_present`` the number of
    classes that occur, so every present class carries the same total weight and
    the weights average to 1 over the batch. Returns a map shaped like ``labels``.
    """
    counts = torch.bincount(labels.flatten(), minlength=num_labels).to(torch.float32)
    present = (counts > 0).sum()
    coeff = labels.numel() / (present * counts.clamp_min(1.0))
    return coeff[labels]


@LOSSES.register()
class OASISLoss(nn.Module):
    """(num_classes + 1)-way per-pixel cross-entropy for an OASIS discriminator.

    Args:
        loss_weight: scales the generator term only (as the GAN losses).
        reduction: the package's rule (per-sample mean over pixels first).
        num_classes: number of VQ codes (256); the logits have ``num_classes + 1`` channels.
        class_balance: weight real-labelled pixels with :func:`class_balance_weights`
            (fake-labelled pixels are not re-weighted, as in OASIS).
        fake_class_first: fake class at channel 0 instead of the last channel.
    """

    def __init__(self, loss_weight: float = 1.0, reduction: str = "mean", num_classes: int = 256,
                 class_balance: bool = False, fake_class_first: bool = False):
        super().__init__()
        self.loss_weight = float(loss_weight)
        self.reduction = check_reduction(reduction)
        self.num_classes = int(num_classes)
        self.class_balance = bool(class_balance)
        self.fake_class_first = bool(fake_class_first)

    @property
    def fake_label(self) -> int:
        return 0 if self.fake_class_first else self.num_classes

    def make_labels(self, logits: torch.Tensor, vq_indices: Optional[torch.Tensor],
                    is_real: bool) -> torch.Tensor:
        """Per-pixel target classes at the logit resolution, shape (N, h, w)."""
        n, _, h, w = logits.shape
        if not is_real:
            return torch.full((n, h, w), self.fake_label, dtype=torch.long, device=logits.device)
        if vq_indices is None:
            raise ValueError("OASISLoss needs the VQ index map for real-labelled pixels")
        labels = upsample_labels(vq_indices.to(logits.device), (h, w))
        if labels.min() < 0 or labels.max() >= self.num_classes:
            raise ValueError(f"VQ indices must lie in [0, {self.num_classes}), "
                             f"got [{int(labels.min())}, {int(labels.max())}]")
        return labels + 1 if self.fake_class_first else labels

    def forward(self, logits: torch.Tensor, vq_indices: Optional[torch.Tensor], is_real: bool,
                is_disc: bool = False, sample_weight: Optional[torch.Tensor] = None) -> torch.Tensor:
        if logits.ndim != 4 or logits.shape[1] != self.num_classes + 1:
            raise ValueError(f"expected logits (N, {self.num_classes + 1}, h, w), got {tuple(logits.shape)}")
        labels = self.make_labels(logits, vq_indices, is_real)
        loss = F.cross_entropy(logits, labels, reduction="none")
        if self.class_balance and is_real:
            loss = loss * class_balance_weights(labels, self.num_classes + 1).to(loss.dtype)
        loss = reduce_batch(loss, self.reduction, sample_weight)
        return loss if is_disc else self.loss_weight * loss
