"""Models, registered by explicit import (no filename scanning)."""
from src.models import discriminators, vq  # noqa: F401  (VQGAN, quantizers, PatchGAN, OASIS)
from src.models.codec import dcvic  # noqa: F401  (DC-VIC and its subnets)
from src.models.demo import MeanScaleDemo

__all__ = ["MeanScaleDemo", "dcvic", "discriminators", "vq"]
