"""Quantizers with one return type, :class:`QuantizerOutput`.

``build_quantizer(type="vq" | "cvq" | "fsq" | "lfq", **kwargs)``; the class names are accepted
too. Every quantizer takes ``(B, C, *spatial)``, returns ``QuantizerOutput(quantized, indices,
loss, losses, stats)`` and inverts indices with ``indices_to_codes``.
"""
from __future__ import annotations

from typing import Any, Callable, Dict

from torch import nn

from .base import QuantizerOutput, codebook_usage, usage_from_counts
from .cvq import ClusteredVectorQuantizer
from .fsq import FSQ, FSQ_LEVELS, fsq_levels
from .lfq import LFQ
from .vq import VectorQuantizer

QUANTIZERS: Dict[str, Callable[..., nn.Module]] = {
    "vq": VectorQuantizer,
    "cvq": ClusteredVectorQuantizer,
    "fsq": FSQ,
    "lfq": LFQ,
}
_BY_CLASS_NAME = {cls.__name__: cls for cls in QUANTIZERS.values()}


def build_quantizer(type: str, **kwargs: Any) -> nn.Module:  # noqa: A002 - config key
    """Build a quantizer by short name (``vq``, ``cvq``, ``fsq``, ``lfq``) or class name."""
    cls = QUANTIZERS.get(type) or _BY_CLASS_NAME.get(type)
    if cls is None:
        valid = ", ".join(list(QUANTIZERS) + list(_BY_CLASS_NAME))
        raise KeyError(f"unknown quantizer type {type!r}; valid: {valid}")
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise TypeError(f"building quantizer {type!r}: {e}") from e


__all__ = [
    "QuantizerOutput", "codebook_usage", "usage_from_counts", "VectorQuantizer",
    "ClusteredVectorQuantizer", "FSQ", "FSQ_LEVELS", "fsq_levels", "LFQ", "QUANTIZERS",
    "build_quantizer",
]
