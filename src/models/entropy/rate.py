"""Bits and bits per pixel from an entropy model's likelihoods: the one place they are computed
(the model's ``bpp``, the rate loss, the rate search and the coder's estimates all call it)."""
from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor


def bits(likelihoods: Tensor) -> Tensor:
    """Per-sample code length ``-sum(log2 p)`` of (B, ...) likelihoods -> (B,), in their dtype."""
    return -torch.log2(likelihoods).flatten(1).sum(dim=1)


def bits_per_pixel(likelihoods: Tensor, num_pixels: int) -> Tensor:
    """Per-sample bits per pixel, ``-sum(log2 p) / num_pixels`` -> (B,)."""
    return bits(likelihoods) / num_pixels


def bpp_from_likelihoods(likelihoods: Mapping[str, Tensor], num_pixels: int) -> Tensor:
    """Bits per pixel of each sample summed over every entry (e.g. ``{"y": ..., "z": ...}``) -> (B,)."""
    if not likelihoods:
        raise ValueError("likelihoods is empty")
    return sum(bits_per_pixel(p, num_pixels) for p in likelihoods.values())
