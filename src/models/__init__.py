"""Models, registered by explicit import (no filename scanning): the DC-VIC codec and its
subnets, the VQGAN prior with its quantizers, the discriminators and the demo codec. The image
tokenizer zoo registers its own models from :mod:`src.zoo` (see ``src.zoo.register``)."""
from src.models import discriminators, vq  # noqa: F401  (VQGAN, quantizers, discriminators)
from src.models.codec import dcvic  # noqa: F401  (DC-VIC and its subnets)
from src.models.demo import MeanScaleDemo

__all__ = ["MeanScaleDemo", "dcvic", "discriminators", "vq"]
