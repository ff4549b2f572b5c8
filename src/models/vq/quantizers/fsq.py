"""Finite scalar quantisation (FSQ).

Mentzer, Minnen, Agustsson & Tschannen, "Finite Scalar Quantization: VQ-VAE Made Simple",
ICLR 2024 (arXiv 2309.15505). Each of d channels is squashed to a bounded range and rounded to
one of ``L_i`` values; the implicit codebook is the grid of ``prod(L_i)`` points. No codebook
parameters and no auxiliary loss; gradients pass by the straight-through estimator.

    bound(z_i) = tanh(z_i + shift_i) * (L_i - 1)(1 + eps) / 2 - offset_i
    (offset 1/2 for even L_i so the grid is integer after rounding)
    code_i     = round(bound(z_i)) / (L_i // 2)            in [-1, 1]
    index      = sum_i (code_i (L_i // 2) + L_i // 2) * prod_{j<i} L_j
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import nn

from .base import QuantizerOutput, codebook_usage, flatten_channels, round_ste, unflatten_channels

# Levels recommended by the paper for target codebook sizes 2^8 .. 2^16 (their products are
# 240, 1000, 4375, 15360 and 64000). Either the target or the product selects the levels.
# 8000 -> (8, 8, 5, 5, 5) is not in the paper's table; it is a common choice (e.g. in the
# vector-quantize-pytorch README) that we keep for convenience.
_PAPER_LEVELS = {
    2 ** 8: (8, 6, 5),
    2 ** 10: (8, 5, 5, 5),
    2 ** 12: (7, 5, 5, 5, 5),
    2 ** 14: (8, 8, 8, 6, 5),
    2 ** 16: (8, 8, 8, 5, 5, 5),
}
FSQ_LEVELS = {**_PAPER_LEVELS, **{math.prod(v): v for v in _PAPER_LEVELS.values()},
              8000: (8, 8, 5, 5, 5)}


def fsq_levels(codebook_size: int) -> tuple:
    """Levels for a codebook size from :data:`FSQ_LEVELS`; lists the valid sizes otherwise."""
    if codebook_size not in FSQ_LEVELS:
        valid = ", ".join(str(k) for k in sorted(FSQ_LEVELS))
        raise ValueError(f"no FSQ levels for codebook size {codebook_size}; valid sizes: {valid} "
                         "(or pass levels=[...] explicitly)")
    return FSQ_LEVELS[codebook_size]


class FSQ(nn.Module):
    """Finite scalar quantizer.

    Args:
        levels: values per channel, e.g. ``[8, 5, 5, 5]``; or
        codebook_size: looked up in :data:`FSQ_LEVELS` when ``levels`` is not given.
        dim: input channels; when it differs from ``len(levels)`` a linear projection maps
            ``dim -> len(levels)`` before and back after quantisation.
        eps: keeps ``tanh`` away from the rounding boundary of the outermost level.

    ``self.codebook_size`` is ``prod(levels)`` (which may differ from a nominal target size).
    """

    def __init__(self, levels: Optional[Sequence[int]] = None, codebook_size: Optional[int] = None,
                 dim: Optional[int] = None, eps: float = 1e-3):
        super().__init__()
        if levels is None:
            if codebook_size is None:
                raise ValueError("FSQ needs levels=[...] or codebook_size")
            levels = fsq_levels(codebook_size)
        levels = [int(v) for v in levels]
        if any(v < 2 for v in levels):
            raise ValueError(f"FSQ levels must be >= 2, got {levels}")
        self.levels_list = levels
        self.codebook_size = math.prod(levels)
        self.num_channels = len(levels)
        self.dim = dim or len(levels)
        self.eps = eps
        lv = torch.tensor(levels, dtype=torch.long)
        basis = torch.cumprod(torch.tensor([1] + levels[:-1], dtype=torch.long), 0)
        self.register_buffer("levels", lv, persistent=False)
        self.register_buffer("basis", basis, persistent=False)
        project = self.dim != len(levels)
        self.project_in = nn.Linear(self.dim, len(levels)) if project else nn.Identity()
        self.project_out = nn.Linear(len(levels), self.dim) if project else nn.Identity()

    def _half_width(self) -> torch.Tensor:
        return (self.levels // 2).float()

    def bound(self, z: torch.Tensor) -> torch.Tensor:
        lv = self.levels.float()
        half_l = (lv - 1) * (1 + self.eps) / 2
        offset = torch.where(self.levels % 2 == 0, 0.5, 0.0)
        shift = torch.atanh(offset / half_l)
        return torch.tanh(z + shift) * half_l - offset

    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        """Channel-last ``(..., d)`` -> codes in [-1, 1] (straight-through)."""
        return round_ste(self.bound(z)) / self._half_width()

    def codes_to_indices(self, codes: torch.Tensor) -> torch.Tensor:
        """Channel-last codes ``(..., d)`` -> indices ``(...)``."""
        half = self._half_width()
        digits = torch.round(codes * half + half).long()
        return (digits * self.basis).sum(-1)

    def indices_to_level_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """Indices ``(...)`` -> channel-last codes ``(..., d)`` in [-1, 1] (no ``project_out``)."""
        digits = (indices.unsqueeze(-1) // self.basis) % self.levels
        half = self._half_width()
        return (digits.float() - half) / half

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        flat, lead = flatten_channels(z)
        if flat.shape[1] != self.dim:
            raise ValueError(f"expected {self.dim} channels, got {flat.shape[1]}")
        codes = self.quantize(self.project_in(flat))
        indices = self.codes_to_indices(codes.detach()).reshape(lead)
        out = unflatten_channels(self.project_out(codes), lead)
        return QuantizerOutput(quantized=out, indices=indices, loss=z.new_zeros(()), losses={},
                               stats=codebook_usage(indices, self.codebook_size))

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """``(B, *S)`` indices -> ``(B, dim, *S)``, what ``forward`` returns for those indices."""
        codes = self.project_out(self.indices_to_level_codes(indices))
        return codes.movedim(-1, 1).contiguous()

    def extra_repr(self) -> str:
        return f"levels={self.levels_list}, codebook_size={self.codebook_size}, dim={self.dim}"
