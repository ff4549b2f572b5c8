"""Discriminators for adversarial training."""
from .conditional import BetaConditionedDiscriminator, OASISDiscriminator, beta_channels
from .patchgan import ActNorm, PatchGANDiscriminator

__all__ = ["ActNorm", "BetaConditionedDiscriminator", "OASISDiscriminator", "PatchGANDiscriminator",
           "beta_channels"]
