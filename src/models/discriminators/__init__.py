"""Discriminators for adversarial training."""
from .conditional import DualBetaPatchGANDiscriminator
from .patchgan import ActNorm, PatchGANDiscriminator

__all__ = ["ActNorm", "DualBetaPatchGANDiscriminator", "PatchGANDiscriminator"]
