"""Training losses, registered in :data:`src.utils.registry.LOSSES` by class name.

Every loss takes ``loss_weight`` and ``reduction`` ('mean' | 'sum' | 'none');
see :mod:`src.losses.weighting` for the shared reduction rule (per-sample
first, so 'none' gives an (N,) vector ready for per-sample beta weights).
"""
from src.utils.registry import LOSSES

from .distortion import MSELoss, VanillaMSELoss
from .gan import HingeGANLoss, VanillaGANLoss
from .oasis import OASISLoss
from .perceptual import ConvNeXtPerceptualLoss, LPIPSLoss
from .rate import RateLoss, bpp_from_likelihoods
from .vq_code import CrossEntropyLoss, FocalCrossEntropyLoss, focal_cross_entropy
from .weighting import adaptive_gan_weight, beta_weight, reduce_batch


def build_loss(cfg):
    """Build a loss from a config section ``{"type": <name>, **kwargs}``."""
    return LOSSES.build(cfg)


__all__ = [
    "LOSSES", "build_loss", "RateLoss", "bpp_from_likelihoods", "MSELoss", "VanillaMSELoss",
    "LPIPSLoss", "ConvNeXtPerceptualLoss", "FocalCrossEntropyLoss", "CrossEntropyLoss", "focal_cross_entropy",
    "VanillaGANLoss", "HingeGANLoss", "OASISLoss", "beta_weight", "adaptive_gan_weight",
    "reduce_batch",
]
