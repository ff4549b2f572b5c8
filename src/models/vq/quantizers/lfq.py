"""Lookup-free quantisation (LFQ).

Yu et al., "Language Model Beats Diffusion -- Tokenizer is Key to Visual Generation" (MAGVIT-v2),
ICLR 2024. Each of d channels is quantised to its sign, ``q_i = s * sign(z_i)``; the codebook is
the implicit set ``{-s, s}^d`` of size ``K = 2^d`` and the index is the binary number of the bits
``q_i > 0`` (first channel = most significant bit).

Entropy penalty (to use all codes, be confident per token):
    L_entropy = E_z[H(p(c|z))] - gamma * H(E_z[p(c|z)]),  p(c|z) = softmax_c(-||z - c||^2 / tau)
Because the codebook is a product set, ``p(c|z)`` factorises over channels with
``p(q_i = +s | z) = sigmoid(4 s z_i / tau)``; the per-sample entropy is then a sum of binary
entropies. The codebook entropy is exact (a ``N x K`` table) for ``K <= exact_max_codebook``, else
the per-channel approximation ``sum_i H(E_z[p_i])`` (an upper bound) is used.
Plus a commitment term ``||z - sg(q)||^2``.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .base import QuantizerOutput, codebook_usage, flatten_channels, log2_int, unflatten_channels


def _binary_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of Bernoulli(sigmoid(logits)), elementwise, stable for large |logits|."""
    p = torch.sigmoid(logits)
    return -(p * F.logsigmoid(logits) + (1 - p) * F.logsigmoid(-logits))


class LFQ(nn.Module):
    """Lookup-free quantizer.

    Args:
        codebook_size: K = 2^d (or give ``num_bits`` = d).
        dim: input channels; a linear projection ``dim -> d`` (and back) is added when they differ.
        entropy_weight, commitment_weight: weights of the two loss terms in ``loss``.
        diversity_gamma: weight of the codebook entropy inside the entropy term.
        inv_temperature: 1 / tau of the code distribution.
        codebook_scale: s, magnitude of the quantised values.
        exact_max_codebook: largest K for which the codebook entropy is computed exactly.
    """

    def __init__(self, codebook_size: Optional[int] = None, dim: Optional[int] = None,
                 num_bits: Optional[int] = None, entropy_weight: float = 0.1,
                 commitment_weight: float = 0.25, diversity_gamma: float = 1.0,
                 inv_temperature: float = 100.0, codebook_scale: float = 1.0,
                 exact_max_codebook: int = 4096):
        super().__init__()
        if num_bits is None:
            if codebook_size is None:
                raise ValueError("LFQ needs codebook_size (a power of two) or num_bits")
            num_bits = log2_int(codebook_size, "LFQ codebook_size")
        elif codebook_size is not None and codebook_size != 2 ** num_bits:
            raise ValueError(f"codebook_size {codebook_size} != 2**num_bits ({2 ** num_bits})")
        self.num_bits, self.codebook_size = num_bits, 2 ** num_bits
        self.dim = dim or num_bits
        self.entropy_weight, self.commitment_weight = entropy_weight, commitment_weight
        self.diversity_gamma, self.inv_temperature = diversity_gamma, inv_temperature
        self.codebook_scale, self.exact_max_codebook = codebook_scale, exact_max_codebook
        self.register_buffer("mask", 2 ** torch.arange(num_bits - 1, -1, -1), persistent=False)
        project = self.dim != num_bits
        self.project_in = nn.Linear(self.dim, num_bits) if project else nn.Identity()
        self.project_out = nn.Linear(num_bits, self.dim) if project else nn.Identity()

    def _codebook_entropy(self, logits: torch.Tensor) -> torch.Tensor:
        """H(E_z[p(c|z)]) from per-bit logits (N, d)."""
        if self.codebook_size > self.exact_max_codebook:
            return _binary_entropy(torch.logit(torch.sigmoid(logits).mean(0), eps=1e-6)).sum()
        bits = ((torch.arange(self.codebook_size, device=logits.device).unsqueeze(1)
                 & self.mask) != 0).to(logits.dtype)  # (K, d)
        log_p = F.logsigmoid(logits) @ bits.t() + F.logsigmoid(-logits) @ (1 - bits).t()  # (N, K)
        avg = log_p.exp().mean(0)
        return -(avg * torch.log(avg.clamp_min(1e-12))).sum()

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        flat, lead = flatten_channels(z)
        if flat.shape[1] != self.dim:
            raise ValueError(f"expected {self.dim} channels, got {flat.shape[1]}")
        h = self.project_in(flat)
        s = self.codebook_scale
        q = torch.where(h > 0, s, -s).to(h.dtype)
        indices = ((h > 0).long() * self.mask).sum(-1)
        # p(q_i = +s | z) = sigmoid(logit_i): softmax over {+s, -s} of -(z - c)^2 / tau
        logits = 4.0 * s * self.inv_temperature * h
        per_sample = _binary_entropy(logits).sum(-1).mean()
        codebook_ent = self._codebook_entropy(logits)
        entropy = per_sample - self.diversity_gamma * codebook_ent
        commitment = F.mse_loss(h, q.detach())
        loss = self.entropy_weight * entropy + self.commitment_weight * commitment
        quantized = self.project_out(h + (q - h).detach())
        indices = indices.reshape(lead)
        stats = codebook_usage(indices, self.codebook_size)
        return QuantizerOutput(
            quantized=unflatten_channels(quantized, lead), indices=indices, loss=loss,
            losses={"entropy": entropy, "per_sample_entropy": per_sample,
                    "codebook_entropy": codebook_ent, "commitment": commitment},
            stats=stats)

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """``(B, *S)`` indices -> ``(B, dim, *S)``, what ``forward`` returns for those indices."""
        bits = (indices.unsqueeze(-1) & self.mask) != 0
        s = self.codebook_scale
        q = torch.where(bits, s, -s).float()
        return self.project_out(q).movedim(-1, 1).contiguous()

    def extra_repr(self) -> str:
        return f"codebook_size={self.codebook_size}, num_bits={self.num_bits}, dim={self.dim}"
