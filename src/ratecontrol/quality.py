"""Reconstruction quality of one (beta_vq, beta_rate) pair on the validation set: PSNR, patch FID.

Patches follow :mod:`src.metrics.fid` (aligned grid + grid shifted by half a patch); a 256x256
crop gives exactly one 256 patch, so on the stage-2 set the FID is over whole crops. The
features of the real patches are computed once and reused for every candidate pair.

``RandomConvFeatures`` is a seeded random conv net standing in for Inception-v3 when its
weights cannot be downloaded (offline tests): its FID values MEAN NOTHING about image quality;
they only exercise the pipeline.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional

import numpy as np
import torch
from torch import nn

from src.metrics import extract_patches, fid_from_features, psnr, to_uint8_grid
from src.ratecontrol.valset import ValSet

FeatureFn = Callable[[torch.Tensor], np.ndarray]


class RandomConvFeatures:
    """Seeded random conv features (B, dim) of float [0, 1] (B)CHW images; offline stand-in only.

    The numbers are reproducible for a seed but carry NO perceptual meaning.
    """

    def __init__(self, dim: int = 32, seed: int = 0, device: str | torch.device = "cpu"):
        gen = torch.Generator().manual_seed(seed)
        self.net = nn.Sequential(nn.Conv2d(3, 16, 4, 4), nn.ReLU(), nn.Conv2d(16, dim, 4, 4),
                                 nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        for p in self.net.parameters():
            p.data = torch.randn(p.shape, generator=gen) * 0.3
        self.device = torch.device(device)
        self.net.to(self.device).eval()

    @torch.no_grad()
    def __call__(self, images) -> np.ndarray:
        x = (to_uint8_grid(images) / 255.0).to(self.device, torch.float32)
        return self.net(x).to("cpu", torch.float64).numpy()


def build_feature_extractor(kind: str, device: str | torch.device = "cpu") -> FeatureFn:
    """``'inception'`` (pytorch-fid weights; may raise MetricUnavailable) or ``'random'``."""
    if kind == "inception":
        from src.metrics import InceptionFeatures

        return InceptionFeatures(device)
    if kind == "random":
        return RandomConvFeatures(device=device)
    raise ValueError(f"unknown feature extractor {kind!r}; choose inception or random")


def patch_features(images_u8: torch.Tensor, extractor: FeatureFn, patch_size: int) -> np.ndarray:
    """Features of all patches of a uint8 (B, 3, H, W) batch."""
    out = []
    for img in images_u8:
        patches = extract_patches(img.double() / 255.0, patch_size)
        if len(patches):
            out.append(extractor(patches))
    if not out:
        raise ValueError(f"no {patch_size}x{patch_size} patch fits in {tuple(images_u8.shape[-2:])} images")
    return np.concatenate(out)


def _to_u8(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float -> uint8 (rounded, clamped), like a saved PNG."""
    return ((x.detach().float().cpu().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)


class QualityEvaluator:
    """PSNR and patch FID of reconstructions of ``data`` for given betas (real features cached)."""

    def __init__(self, model, data: ValSet, batch_size: int, extractor: FeatureFn,
                 patch_size: int = 256):
        self.model, self.data, self.batch_size = model, data, batch_size
        self.extractor, self.patch_size = extractor, patch_size
        self._real: Optional[np.ndarray] = None

    def real_features(self) -> np.ndarray:
        """Features of the original crops' patches (computed on first use)."""
        if self._real is None:
            self._real = np.concatenate([patch_features(self.data.images[i:i + self.batch_size],
                                                        self.extractor, self.patch_size)
                                         for i in range(0, len(self.data), self.batch_size)])
        return self._real

    @torch.no_grad()
    def __call__(self, beta_vq: float, beta_rate: float) -> Dict[str, float]:
        """-> {"psnr": mean dB over images, "fid": patch FID, "bpp": mean estimated bpp}."""
        dev = self.model.device
        psnrs, bpps, fake = [], [], []
        start = 0
        for x, idx in self.data.batches(self.batch_size):
            b = x.shape[0]
            br = torch.full((b,), float(beta_rate), device=dev)
            bv = torch.full((b,), float(beta_vq), device=dev)
            out = self.model(x.to(dev), br, bv, vq_indices=None if idx is None else idx.to(dev))
            rec = _to_u8(out["x_hat"])
            real = self.data.images[start:start + b]
            start += b
            psnrs.append(psnr(rec.permute(0, 2, 3, 1), real.permute(0, 2, 3, 1)).clamp(max=100.0))
            bpps.append(out["bpp"].double().cpu())
            fake.append(patch_features(rec, self.extractor, self.patch_size))
        fid = fid_from_features(self.real_features(), np.concatenate(fake))
        return {"psnr": float(torch.cat(psnrs).mean()), "fid": float(fid),
                "bpp": float(torch.cat(bpps).mean())}
