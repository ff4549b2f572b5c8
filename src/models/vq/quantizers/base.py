"""What every quantizer returns, and the codebook statistics they share.

All quantizers take a channel-first tensor ``z`` of shape ``(B, C, *spatial)`` (for images
``(B, C, H, W)``) and return one :class:`QuantizerOutput`; ``indices`` have shape
``(B, *spatial)``. ``indices_to_codes(indices)`` inverts the lookup back to ``(B, C, *spatial)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, Tuple

import torch


@dataclass
class QuantizerOutput:
    """Result of a quantizer's forward pass.

    quantized: straight-through quantised tensor, same shape as the input.
    indices: LongTensor of code indices, the input shape without the channel axis.
    loss: scalar tensor, the weighted total of ``losses`` (zero when the quantizer has none).
    losses: named, unweighted loss terms (e.g. ``codebook``, ``commitment``, ``entropy``).
    stats: detached tensors for logging (``usage``, ``perplexity``, ``entropy``, ...).
    """

    quantized: torch.Tensor
    indices: torch.Tensor
    loss: torch.Tensor
    losses: Dict[str, torch.Tensor] = field(default_factory=dict)
    stats: Dict[str, torch.Tensor] = field(default_factory=dict)


def flatten_channels(z: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, ...]]:
    """``(B, C, *S) -> ((B * prod(S), C), (B, *S))``."""
    if z.dim() < 2:
        raise ValueError(f"quantizer input needs shape (B, C, ...), got {tuple(z.shape)}")
    lead = (z.shape[0],) + tuple(z.shape[2:])
    return z.movedim(1, -1).reshape(-1, z.shape[1]), lead


def unflatten_channels(flat: torch.Tensor, lead: Tuple[int, ...]) -> torch.Tensor:
    """Inverse of :func:`flatten_channels`: ``(N, C) -> (B, C, *S)``."""
    return flat.reshape(*lead, flat.shape[-1]).movedim(-1, 1).contiguous()


def usage_from_counts(counts: torch.Tensor) -> Dict[str, torch.Tensor]:
    """Codebook statistics from per-code counts (any float/int tensor of length K).

    usage: fraction of codes used at least once; entropy: of the empirical code distribution, in
    nats; perplexity: ``exp(entropy)``, the effective number of codes (K at uniform use).
    """
    counts = counts.detach().float()
    probs = counts / counts.sum().clamp_min(1.0)
    entropy = -(probs * torch.log(probs.clamp_min(1e-12))).sum()
    return {"usage": (counts > 0).float().mean(), "perplexity": entropy.exp(), "entropy": entropy}


def codebook_usage(indices: torch.Tensor, codebook_size: int) -> Dict[str, torch.Tensor]:
    """Usage, perplexity and entropy (nats) of ``indices`` over a codebook of ``codebook_size``."""
    counts = torch.bincount(indices.detach().reshape(-1), minlength=codebook_size)
    if counts.numel() > codebook_size:
        raise ValueError(f"index {int(indices.max())} out of range for codebook size "
                         f"{codebook_size}")
    return usage_from_counts(counts)


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round with a straight-through (identity) gradient."""
    return x + (torch.round(x) - x).detach()


def log2_int(n: int, what: str) -> int:
    bits = int(round(math.log2(n))) if n > 0 else -1
    if bits < 1 or 2 ** bits != n:
        raise ValueError(f"{what} must be a power of two >= 2, got {n}")
    return bits
