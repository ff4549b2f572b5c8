"""Nearest-neighbour vector quantisation with a learned codebook.

van den Oord, Vinyals & Kavukcuoglu, "Neural Discrete Representation Learning" (VQ-VAE),
NeurIPS 2017: ``z_q = e_k`` with ``k = argmin_j ||z - e_j||``, straight-through gradient,
loss ``||sg(z) - e||^2 + beta ||z - sg(e)||^2``.
Cosine distance (``distance="cos"``) follows Yu et al., "Vector-quantized Image Modeling with
Improved VQGAN" (ViT-VQGAN), ICLR 2022: inputs and codes are l2-normalised, the code of largest
cosine similarity is chosen and the normalised code is returned.

The codebook is ``embedding.weight`` (K x D), the name used by taming-transformers'
``VectorQuantizer2``, so VQGAN checkpoints load strictly.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import QuantizerOutput, codebook_usage, flatten_channels, unflatten_channels

DISTANCES = ("l2", "cos")


def code_similarity(flat: torch.Tensor, codebook: torch.Tensor, distance: str) -> torch.Tensor:
    """(N, D) x (K, D) -> (N, K) similarity, larger is closer: ``-||z - e||^2`` or cosine."""
    if distance == "l2":
        sq = flat.pow(2).sum(1, keepdim=True) + codebook.pow(2).sum(1) - 2.0 * flat @ codebook.t()
        return -sq
    if distance == "cos":
        return F.normalize(flat, dim=1) @ F.normalize(codebook, dim=1).t()
    raise ValueError(f"unknown distance {distance!r}; valid: {', '.join(DISTANCES)}")


class VectorQuantizer(nn.Module):
    """VQ-VAE quantizer (L2 or cosine), straight-through estimator.

    Args:
        codebook_size: K, number of codes.
        dim: D, code dimension (the input's channel count).
        beta: commitment weight.
        distance: ``"l2"`` or ``"cos"``.
        legacy_beta: apply ``beta`` to the codebook term instead of the commitment term, which is
            what taming-transformers' ``VectorQuantizer2(legacy=True)`` (used for all published
            VQGANs) does; keep it when fine-tuning those models.
    """

    def __init__(self, codebook_size: int, dim: int, beta: float = 0.25, distance: str = "l2",
                 legacy_beta: bool = False):
        super().__init__()
        if distance not in DISTANCES:
            raise ValueError(f"unknown distance {distance!r}; valid: {', '.join(DISTANCES)}")
        self.codebook_size, self.dim = codebook_size, dim
        self.beta, self.distance, self.legacy_beta = beta, distance, legacy_beta
        self.embedding = nn.Embedding(codebook_size, dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / codebook_size, 1.0 / codebook_size)

    def codebook(self) -> torch.Tensor:
        """Codes as returned by the quantizer (normalised for cosine distance)."""
        w = self.embedding.weight
        return F.normalize(w, dim=1) if self.distance == "cos" else w

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        flat, lead = flatten_channels(z)
        if flat.shape[1] != self.dim:
            raise ValueError(f"expected {self.dim} channels, got {flat.shape[1]}")
        sim = code_similarity(flat.detach(), self.embedding.weight.detach(), self.distance)
        indices = sim.argmax(1)
        target = F.normalize(flat, dim=1) if self.distance == "cos" else flat
        codes = F.embedding(indices, self.codebook())
        codebook_loss = F.mse_loss(codes, target.detach())
        commitment = F.mse_loss(target, codes.detach())
        if self.legacy_beta:
            loss = self.beta * codebook_loss + commitment
        else:
            loss = codebook_loss + self.beta * commitment
        quantized = target + (codes - target).detach()
        indices = indices.reshape(lead)
        return QuantizerOutput(
            quantized=unflatten_channels(quantized, lead), indices=indices, loss=loss,
            losses={"codebook": codebook_loss, "commitment": commitment},
            stats=codebook_usage(indices, self.codebook_size))

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """``(B, *S)`` indices -> ``(B, D, *S)`` codes."""
        return F.embedding(indices, self.codebook()).movedim(-1, 1).contiguous()
