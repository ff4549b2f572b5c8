"""Dual-beta conditioning: Fourier features of two scalars, an MLP, and scale/shift modulation.

* Agustsson et al., "Multi-Realism Image Compression with a Conditional Generator", CVPR 2023
  (Fourier-encoded beta fed to an MLP that conditions the networks).
* Iwai et al., "Dual-Conditioned VQGAN-based Image Compression" (DC-VIC), IEEE Access 2024
  (two betas: one for the rate, one for the VQ-estimation/realism trade-off).

Data flow (per sample, L = 10, ``include_x``)::

    beta_rate -> v1 = (beta/max1 - 0.5) * 2 -> [v1, sin(v1 2^k), cos(v1 2^k)]  (21)
    beta_vq   -> v2 = (beta/max2 - 0.5) * 2 -> [v2, sin(v2 2^k), cos(v2 2^k)]  (21)
    cat (42) -> Linear -> ReLU -> Linear -> cond (B, cond_ch, 1, 1)
    feat, cond -> shared 1x1 + ReLU -> scale, shift (1x1) -> feat * (1 + scale) + shift

The normalisation is written ``(beta / max - 0.5) * 2`` as in the reference, so that the floats
fed to a released checkpoint are the same bits.
"""
from __future__ import annotations

import math
from typing import Optional, Union

import torch
from torch import Tensor, nn

BetaLike = Union[float, int, Tensor]


class FourierEncoding:
    """Stateless Fourier features of a scalar in ``[0, max_beta]`` (no parameters, no buffers)."""

    def __init__(self, L: int, max_beta: float, use_pi: bool = False, include_x: bool = True):
        if L <= 0:
            raise ValueError(f"L must be positive, got {L}")
        if max_beta is None or max_beta <= 0:
            raise ValueError(f"max_beta must be a positive number, got {max_beta!r}")
        self.L = L
        self.max_beta = float(max_beta)
        self.use_pi = use_pi
        self.include_x = include_x

    @property
    def out_ch(self) -> int:
        return 2 * self.L + 1 if self.include_x else 2 * self.L

    def __call__(self, beta: Tensor) -> Tensor:
        """beta (B,) float32 -> features (B, out_ch), on beta's device."""
        if beta.ndim != 1:
            raise ValueError(f"beta must be a 1-D tensor (one value per sample), "
                             f"got {tuple(beta.shape)}")
        beta = beta.detach().float()
        if beta.min() < 0 or beta.max() > self.max_beta:
            raise ValueError(f"beta must lie in [0, {self.max_beta}], got {beta.tolist()}")
        freq = torch.pow(torch.tensor([2.0], device=beta.device),
                         torch.arange(self.L, device=beta.device)).unsqueeze(0)  # (1, L)
        if self.use_pi:
            freq = freq * math.pi
        v = normalise(beta, self.max_beta).unsqueeze(1)  # (B, 1) in [-1, 1]
        feats = [torch.sin(v * freq), torch.cos(v * freq)]
        if self.include_x:
            feats.insert(0, v)
        return torch.cat(feats, dim=1)


def normalise(beta: Tensor, max_beta: float) -> Tensor:
    """``[0, max_beta] -> [-1, 1]``, written as the reference writes it (same float32 bits)."""
    return (beta / max_beta - 0.5) * 2


def as_beta_tensor(beta: Optional[BetaLike], batch: int, name: str,
                   device: Union[str, torch.device, None] = None) -> Tensor:
    """A float, 0-d or (B,)/(1,) tensor -> (B,) float32 tensor on ``device`` (a tensor's own
    device when None, the CPU for a number), built there without a round trip through the host."""
    if beta is None:
        raise ValueError(f"{name} is required by the beta-conditioned model")
    if torch.is_tensor(beta):
        t = beta.detach().to(device=device if device is not None else beta.device, dtype=torch.float32)
    else:
        t = torch.as_tensor(beta, dtype=torch.float32, device=device)
    if t.ndim == 0:
        t = t.expand(batch)
    if t.ndim != 1 or t.shape[0] not in (1, batch):
        raise ValueError(f"{name} must be a float or a ({batch},) tensor, got shape {tuple(t.shape)}")
    return t.expand(batch).contiguous()


def beta_mlp(in_ch: int, cond_ch: int) -> nn.Sequential:
    """Linear -> ReLU -> Linear (state-dict keys ``0.*`` and ``2.*``)."""
    return nn.Sequential(nn.Linear(in_ch, cond_ch), nn.ReLU(inplace=True), nn.Linear(cond_ch, cond_ch))


def dual_beta_condition(enc_1: FourierEncoding, enc_2: FourierEncoding, mlp: nn.Module,
                        beta_1: BetaLike, beta_2: BetaLike, batch: int, device: torch.device) -> Tensor:
    """Both betas (floats or (B,) tensors) -> conditioning vector (B, cond_ch, 1, 1) on ``device``
    (the betas are built there, never moved through the host)."""
    b1 = as_beta_tensor(beta_1, batch, "beta_rate", device)
    b2 = as_beta_tensor(beta_2, batch, "beta_vq", device)
    feats = torch.cat([enc_1(b1), enc_2(b2)], dim=1)
    return mlp(feats)[:, :, None, None]


class BetaScaleShift(nn.Module):
    """Feature-wise affine modulation ``feat * (1 + scale(c)) + shift(c)``."""

    def __init__(self, cond_ch: int, feat_ch: int):
        super().__init__()
        self.shared = nn.Sequential(nn.Conv2d(cond_ch, cond_ch, kernel_size=1), nn.ReLU())
        self.scale = nn.Conv2d(cond_ch, feat_ch, kernel_size=1)
        self.shift = nn.Conv2d(cond_ch, feat_ch, kernel_size=1)

    def forward(self, feat: Tensor, cond: Tensor) -> Tensor:
        c = self.shared(cond)
        return feat * (1 + self.scale(c)) + self.shift(c)
