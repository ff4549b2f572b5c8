"""Pad images to a multiple of the codec's downsampling factor, and crop back.

DC-VIC downsamples by 64 from the image to the hyper-latent z, so an image is
padded at the bottom and right to a multiple of 64 before encoding and the
reconstruction is cropped back to the original size after decoding.

Reflection padding in PyTorch needs ``pad < size`` along each side. Here a
larger pad is reached by reflecting repeatedly, each step by at most
``size - 1``; the result is the whole-sample symmetric (mirror) extension of the
image, periodic with period ``2 * (size - 1)``. A side of size 1 cannot be
reflected at all and is replicated instead.
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F

_MODES = ("reflect", "replicate", "constant")


def _reflect_dim(x: torch.Tensor, pad: int, dim: int) -> torch.Tensor:
    """Reflect-pad ``x`` (N, C, H, W) by ``pad`` at the end of ``dim`` (-1 or -2)."""
    while pad > 0:
        size = x.shape[dim]
        if size == 1:
            return _pad_end(x, pad, dim, "replicate")
        step = min(pad, size - 1)
        x = _pad_end(x, step, dim, "reflect")
        pad -= step
    return x


def _pad_end(x: torch.Tensor, pad: int, dim: int, mode: str) -> torch.Tensor:
    """``F.pad`` at the end (right or bottom) of one spatial dim."""
    spec = (0, pad, 0, 0) if dim == -1 else (0, 0, 0, pad)
    return F.pad(x, spec, mode=mode)


def pad_amount(size: int, multiple: int) -> int:
    """How much to add to ``size`` to reach the next multiple of ``multiple``."""
    return (-size) % multiple


def pad_to_multiple(x: torch.Tensor, multiple: int = 64, mode: str = "reflect",
                    ) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """Pad the bottom and right of ``x`` so that H and W are multiples of ``multiple``.

    Args:
        x: (N, C, H, W) or (C, H, W) tensor.
        multiple: target multiple (64 for DC-VIC).
        mode: ``"reflect"`` (mirror, see the module docstring for pads larger
            than the image), ``"replicate"`` or ``"constant"`` (zeros).

    Returns:
        ``(x_padded, (pad_h, pad_w))``; :func:`crop_to` undoes it.
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    if x.ndim not in (3, 4):
        raise ValueError(f"expected a (N, C, H, W) or (C, H, W) tensor, got shape {tuple(x.shape)}")
    if multiple < 1:
        raise ValueError(f"multiple must be >= 1, got {multiple}")
    unbatched = x.ndim == 3
    if unbatched:
        x = x.unsqueeze(0)
    pad_h, pad_w = pad_amount(x.shape[-2], multiple), pad_amount(x.shape[-1], multiple)
    if mode == "reflect":
        x = _reflect_dim(_reflect_dim(x, pad_h, -2), pad_w, -1)
    elif pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
    return (x.squeeze(0) if unbatched else x), (pad_h, pad_w)


def crop_to(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Keep the top-left ``height x width`` of the last two dims of ``x``."""
    if height > x.shape[-2] or width > x.shape[-1]:
        raise ValueError(f"cannot crop {tuple(x.shape[-2:])} to the larger size {(height, width)}")
    return x[..., :height, :width]
