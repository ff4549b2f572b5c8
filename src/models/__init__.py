"""Models, registered by explicit import (no filename scanning)."""
from src.models import discriminators, vq  # noqa: F401  (VQGAN, quantizers, PatchGAN)
from src.models.demo import MeanScaleDemo

__all__ = ["MeanScaleDemo", "discriminators", "vq"]
