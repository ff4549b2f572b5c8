"""Models, registered by explicit import (no filename scanning)."""
from src.models import ar, discriminators, tokenizers, vq  # noqa: F401  (VQGAN, quantizers, zoo, AR)
from src.models.codec import dcvic  # noqa: F401  (DC-VIC and its subnets)
from src.models.demo import MeanScaleDemo

__all__ = ["MeanScaleDemo", "ar", "dcvic", "discriminators", "tokenizers", "vq"]
