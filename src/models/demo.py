"""A tiny mean-scale hyperprior (Minnen et al. 2018) used by the offline quickstart.

It wraps compressai's ``MeanScaleHyperprior`` (entropy models and rANS come from
compressai) behind this project's conventions: images in [-1, 1], the CompressAI
``forward / compress / decompress`` contract, and a per-sample ``bpp`` estimate.
"""
from __future__ import annotations

from typing import Dict, List

import torch
from compressai.models import MeanScaleHyperprior
from torch import nn

from src.models.entropy.buffers import resize_entropy_buffers
from src.utils.registry import MODELS


@MODELS.register()
class MeanScaleDemo(nn.Module):
    """``N`` channels in the transforms, ``M`` latent channels; downsamples by 64 in total."""

    def __init__(self, N: int = 32, M: int = 48):
        super().__init__()
        self.codec = MeanScaleHyperprior(N=N, M=M)

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        out = self.codec((x + 1) / 2)
        num_pixels = x.shape[2] * x.shape[3]
        bpp = sum(-torch.log2(lk).flatten(1).sum(1) for lk in out["likelihoods"].values()) / num_pixels
        return {"x_hat": out["x_hat"] * 2 - 1, "likelihoods": out["likelihoods"], "bpp": bpp}

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Resizes the CDF buffers to the stored ones, then loads (CompressAI semantics)."""
        resize_entropy_buffers(self, state_dict)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def aux_loss(self) -> torch.Tensor:
        return self.codec.aux_loss()

    def update(self, force: bool = False) -> bool:
        return self.codec.update(force=force)

    @torch.no_grad()
    def compress(self, x: torch.Tensor) -> Dict[str, object]:
        return self.codec.compress((x + 1) / 2)

    @torch.no_grad()
    def decompress(self, strings: List[List[bytes]], shape) -> Dict[str, torch.Tensor]:
        out = self.codec.decompress(strings, shape)
        return {"x_hat": out["x_hat"].clamp(0, 1) * 2 - 1}
