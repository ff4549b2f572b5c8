"""Entropy models of DC-VIC: Minnen 2020 hyperprior, ChARM context model, STE entropy models
on CompressAI's EntropyBottleneck / GaussianConditional."""
from .charm import Minnen20CharmContextModel, SliceTransform
from .hyperprior import HyperDecoderBlock, Minnen20HyperDecoder, Minnen20HyperEncoder
from .ste import SteEntropyBottleneck, SteGaussianMeanScaleConditional, ste_round

__all__ = [
    "Minnen20CharmContextModel", "SliceTransform", "HyperDecoderBlock", "Minnen20HyperDecoder",
    "Minnen20HyperEncoder", "SteEntropyBottleneck", "SteGaussianMeanScaleConditional", "ste_round",
]
