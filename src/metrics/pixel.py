"""Pixel metrics (PSNR, SSIM, MS-SSIM) computed on uint8-rounded images.

Each function accepts either

* float tensors in [0, 1], shaped (C, H, W) or (B, C, H, W): they are rounded to the uint8
  grid first (``round(x * 255)``, clipped), as a decoded image saved to PNG would be; or
* uint8 arrays/tensors, shaped (H, W, C) or (B, H, W, C) (the layout of PIL/numpy images).

Values are always compared on the 0..255 scale (``data_range=255``), and one value per image
is returned as a float64 tensor of shape (B,).
"""
from __future__ import annotations

import numpy as np
import torch
from pytorch_msssim import ms_ssim as _ms_ssim
from pytorch_msssim import ssim as _ssim

ImageLike = torch.Tensor | np.ndarray


def to_uint8_grid(img: ImageLike) -> torch.Tensor:
    """Return ``img`` as a float64 (B, C, H, W) tensor holding integers in 0..255.

    Float inputs are taken as [0, 1] (B)CHW; uint8 inputs as (B)HWC. Anything else is an error,
    since guessing the range of e.g. an int64 or a float in 0..255 silently gives wrong numbers.
    """
    if isinstance(img, np.ndarray):
        if img.dtype != np.uint8:
            raise TypeError(f"numpy images must be uint8 (H, W, C), got {img.dtype}")
        img = torch.from_numpy(np.array(img))  # a copy: PIL arrays are read-only
    if img.dtype == torch.uint8:
        if img.ndim == 2:  # greyscale H, W
            img = img[..., None]
        if img.ndim == 3:
            img = img[None]
        if img.ndim != 4:
            raise ValueError(f"uint8 images must be (H, W, C) or (B, H, W, C), got {tuple(img.shape)}")
        return img.permute(0, 3, 1, 2).to(torch.float64)
    if not img.is_floating_point():
        raise TypeError(f"tensors must be float in [0, 1] or uint8, got {img.dtype}")
    if img.ndim == 3:
        img = img[None]
    if img.ndim != 4:
        raise ValueError(f"float images must be (C, H, W) or (B, C, H, W), got {tuple(img.shape)}")
    return (img.detach().to(torch.float64) * 255.0).round().clamp(0, 255)


def _pair(x: ImageLike, y: ImageLike) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = to_uint8_grid(x), to_uint8_grid(y)
    if a.shape != b.shape:
        raise ValueError(f"image shapes differ: {tuple(a.shape)} vs {tuple(b.shape)} (B, C, H, W)")
    return a, b.to(a.device)


def mse(x: ImageLike, y: ImageLike) -> torch.Tensor:
    """Per-image mean squared error on the 0..255 scale, shape (B,)."""
    a, b = _pair(x, y)
    return ((a - b) ** 2).flatten(1).mean(1)


def psnr(x: ImageLike, y: ImageLike, max_db: float = float("inf")) -> torch.Tensor:
    """Per-image PSNR in dB, ``10 log10(255^2 / MSE)``, shape (B,).

    Identical images give ``inf`` unless ``max_db`` caps it (e.g. 100).
    """
    err = mse(x, y)
    return (10.0 * torch.log10(255.0 ** 2 / err)).clamp(max=max_db)


def ms_ssim(x: ImageLike, y: ImageLike) -> torch.Tensor:
    """Per-image MS-SSIM (pytorch-msssim, default 5 scales and weights), shape (B,), in float64.

    The smaller side must exceed 160 px (the 11-px window at the 5th scale).
    """
    a, b = _pair(x, y)
    if min(a.shape[-2:]) <= 160:
        raise ValueError(f"MS-SSIM needs both sides > 160 px, got {tuple(a.shape[-2:])}")
    # float64: in float32 the variance E[x^2] - E[x]^2 loses ~1e-4 of accuracy on 0..255 images
    return _ms_ssim(a, b, data_range=255.0, size_average=False)


def ssim(x: ImageLike, y: ImageLike) -> torch.Tensor:
    """Per-image SSIM (pytorch-msssim: single scale, 11-px Gaussian window), shape (B,)."""
    a, b = _pair(x, y)
    return _ssim(a, b, data_range=255.0, size_average=False)
