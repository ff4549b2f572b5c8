"""Cosine codebook updated by exponential moving averages (online spherical k-means).

Peng et al., "BEiT v2" (VQ-KD), 2022, after van den Oord et al. (VQ-VAE, EMA variant) and Yu et
al. (ViT-VQGAN, l2-normalised codes): inputs ``z`` and codes ``e`` lie on the unit sphere, the code
of largest cosine similarity is chosen, and the codebook is not trained by gradients but moved
towards the mean of the features assigned to it::

    k_i   = argmax_k <z_i, e_k>
    m_k   = normalise(mean of z_i with k_i = k)                  (codes chosen in this batch)
    e_k  <- normalise(decay * e_k + (1 - decay) * m_k)
    loss  = beta * ||z - sg(e_k)||^2                              (commitment only)

With ``reanchor=True`` dead codes are re-initialised as in CVQ-VAE (Zheng & Vedaldi, "Online
Clustered Codebook", ICCV 2023): a usage EMA ``p_k`` gives ``alpha_k = exp(-p_k K 10 / (1 - decay)
- 1e-3)`` and ``e_k <- normalise((1 - alpha_k) e_k + alpha_k a_k)`` with ``a_k`` the batch feature
closest to ``e_k`` (over all ranks). ``kmeans_init`` seeds the codebook with a few spherical
k-means iterations on the first training batch (BEiT v2 does the same). The updates run in
training mode only and are identical on every rank (counts and sums are all-reduced).
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from src.models.vq.quantizers import ClusteredVectorQuantizer, QuantizerOutput, usage_from_counts
from src.models.vq.quantizers.base import flatten_channels, unflatten_channels


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _all_reduce(t: torch.Tensor) -> torch.Tensor:
    if _distributed():
        t = t.clone()
        dist.all_reduce(t)
    return t


class EMACosineQuantizer(nn.Module):
    """Buffers: ``codebook`` (K x D, unit rows), ``usage`` (K, the usage EMA), ``initted``.

    Args:
        codebook_size: K. dim: D. beta: commitment weight. decay: EMA decay of codes and usage.
        reanchor: CVQ-style re-anchoring of dead codes. kmeans_init: seed the codebook from the
            first training batch (``kmeans_iters`` spherical k-means iterations).
    """

    def __init__(self, codebook_size: int = 8192, dim: int = 32, beta: float = 1.0, decay: float = 0.99,
                 reanchor: bool = False, kmeans_init: bool = True, kmeans_iters: int = 10):
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.codebook_size, self.dim, self.beta, self.decay = codebook_size, dim, beta, decay
        self.reanchor, self.kmeans_iters = reanchor, kmeans_iters
        self.register_buffer("codebook", F.normalize(torch.randn(codebook_size, dim), dim=1))
        self.register_buffer("usage", torch.zeros(codebook_size))
        self.register_buffer("initted", torch.tensor(not kmeans_init))

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        flat, lead = flatten_channels(z)
        if flat.shape[1] != self.dim:
            raise ValueError(f"expected {self.dim} channels, got {flat.shape[1]}")
        flat = F.normalize(flat.float(), dim=1)
        if self.training and not bool(self.initted):
            self._kmeans_init(flat.detach())
        sim = flat.detach() @ self.codebook.t()
        indices = sim.argmax(1)
        codes = self.codebook[indices]
        commitment = F.mse_loss(flat, codes)
        quantized = flat + (codes - flat).detach()
        counts = torch.bincount(indices, minlength=self.codebook_size).float()
        if self.training:
            counts = self._update(flat.detach(), sim, indices, counts)
        stats = usage_from_counts(counts)
        stats["dead_codes"] = (self.usage < 1e-3 / self.codebook_size).float().sum()
        return QuantizerOutput(quantized=unflatten_channels(quantized.to(z.dtype), lead),
                               indices=indices.reshape(lead), loss=self.beta * commitment,
                               losses={"commitment": commitment}, stats=stats)

    @torch.no_grad()
    def _update(self, flat: torch.Tensor, sim: torch.Tensor, indices: torch.Tensor,
                counts: torch.Tensor) -> torch.Tensor:
        """EMA step of the chosen codes, usage EMA, re-anchoring; returns all-reduced counts."""
        sums = torch.zeros_like(self.codebook).index_add_(0, indices, flat)
        counts, sums = _all_reduce(counts), _all_reduce(sums)
        chosen = counts > 0
        means = F.normalize(sums, dim=1)
        moved = F.normalize(self.decay * self.codebook + (1 - self.decay) * means, dim=1)
        self.codebook.copy_(torch.where(chosen.unsqueeze(1), moved, self.codebook))
        self.usage.mul_(self.decay).add_(counts / counts.sum().clamp_min(1.0), alpha=1 - self.decay)
        if self.reanchor:
            best_sim, best = sim.max(0)
            anchors = ClusteredVectorQuantizer._closest_over_ranks(best_sim, flat[best])
            k = self.codebook_size
            alpha = torch.exp(-self.usage * k * 10.0 / (1.0 - self.decay) - 1e-3).unsqueeze(1)
            self.codebook.copy_(F.normalize((1 - alpha) * self.codebook + alpha * anchors, dim=1))
        return counts

    @torch.no_grad()
    def _kmeans_init(self, flat: torch.Tensor) -> None:
        """Spherical k-means on one batch (rank 0's result is broadcast)."""
        pick = torch.randint(0, flat.shape[0], (self.codebook_size,), device=flat.device)
        centres = flat[pick].clone()
        for _ in range(self.kmeans_iters):
            assign = (flat @ centres.t()).argmax(1)
            sums = torch.zeros_like(centres).index_add_(0, assign, flat)
            filled = torch.bincount(assign, minlength=self.codebook_size) > 0
            centres = torch.where(filled.unsqueeze(1), F.normalize(sums, dim=1), centres)
        if _distributed():
            dist.broadcast(centres, src=0)
        self.codebook.copy_(centres)
        self.initted.fill_(True)

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """``(B, *S)`` indices -> ``(B, D, *S)`` unit codes."""
        return F.embedding(indices, self.codebook).movedim(-1, 1).contiguous()

    def extra_repr(self) -> str:
        return (f"codebook_size={self.codebook_size}, dim={self.dim}, decay={self.decay}, "
                f"reanchor={self.reanchor}")
