"""Online clustered codebook (CVQ-VAE).

Zheng & Vedaldi, "Online Clustered Codebook", ICCV 2023. Codes that are rarely chosen ("dead")
are pulled towards anchors drawn from the current batch of encoder features:

    p_k     <- gamma p_k + (1 - gamma) (share of features assigned to code k)     usage EMA
    alpha_k  = exp(-p_k K 10 / (1 - gamma) - 1e-3)
    e_k     <- (1 - alpha_k) e_k + alpha_k a_k                                     (paper eq. 6)

so a used code keeps ``1 - alpha_k ~ 1`` of itself, a dead one (``p_k ~ 0``) jumps to its anchor
``a_k``: the feature closest to it (``anchor="closest"``) or one sampled with probability
``softmax`` of the similarity (``"probrandom"``). The update runs in training mode only, after the
loss is formed; it is not a gradient step. Under ``torch.distributed`` the counts are summed over
ranks and the anchors agreed on (closest over all ranks, or rank 0's samples), so every rank keeps
the same codebook.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .base import QuantizerOutput, flatten_channels, unflatten_channels, usage_from_counts
from .vq import DISTANCES, code_similarity

ANCHORS = ("closest", "probrandom")


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class ClusteredVectorQuantizer(nn.Module):
    """CVQ-VAE quantizer; parameters ``embedding.weight`` (K x D) and buffer ``embed_prob`` (K).

    Args:
        codebook_size: K. dim: D. beta: commitment weight (on ``||z - sg(e)||^2``).
        distance: ``"l2"`` or ``"cos"`` (selection only; the raw code is returned, as in the paper).
        decay: gamma of the usage EMA. anchor: ``"closest"`` or ``"probrandom"``.
        reanchor: False switches the usage EMA and re-anchoring off (a plain VQ with the same
            parameters and buffers, so a run can turn clustering on or off when it resumes).
    """

    def __init__(self, codebook_size: int, dim: int, beta: float = 0.25, distance: str = "cos",
                 decay: float = 0.99, anchor: str = "closest", reanchor: bool = True):
        super().__init__()
        if distance not in DISTANCES:
            raise ValueError(f"unknown distance {distance!r}; valid: {', '.join(DISTANCES)}")
        if anchor not in ANCHORS:
            raise ValueError(f"unknown anchor {anchor!r}; valid: {', '.join(ANCHORS)}")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.codebook_size, self.dim = codebook_size, dim
        self.beta, self.distance, self.decay, self.anchor = beta, distance, decay, anchor
        self.reanchor = reanchor
        self.embedding = nn.Embedding(codebook_size, dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / codebook_size, 1.0 / codebook_size)
        self.register_buffer("embed_prob", torch.zeros(codebook_size))

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        flat, lead = flatten_channels(z)
        if flat.shape[1] != self.dim:
            raise ValueError(f"expected {self.dim} channels, got {flat.shape[1]}")
        sim = code_similarity(flat.detach(), self.embedding.weight.detach(), self.distance)
        indices = sim.argmax(1)
        codes = F.embedding(indices, self.embedding.weight)
        codebook_loss = F.mse_loss(codes, flat.detach())
        commitment = F.mse_loss(flat, codes.detach())
        loss = codebook_loss + self.beta * commitment
        quantized = flat + (codes - flat).detach()

        counts = torch.bincount(indices, minlength=self.codebook_size).float()
        if self.training and self.reanchor:
            counts = self._all_reduce(counts)
            self._update_codebook(flat.detach(), sim, counts)
        stats = usage_from_counts(counts)
        stats["dead_codes"] = (self.embed_prob < 1e-3 / self.codebook_size).float().sum()
        return QuantizerOutput(
            quantized=unflatten_channels(quantized, lead), indices=indices.reshape(lead),
            loss=loss, losses={"codebook": codebook_loss, "commitment": commitment}, stats=stats)

    @torch.no_grad()
    def _update_codebook(self, flat: torch.Tensor, sim: torch.Tensor, counts: torch.Tensor) -> None:
        probs = counts / counts.sum().clamp_min(1.0)
        self.embed_prob.mul_(self.decay).add_(probs, alpha=1.0 - self.decay)
        anchors = self._anchors(flat, sim)
        k = self.codebook_size
        alpha = torch.exp(-self.embed_prob * k * 10.0 / (1.0 - self.decay) - 1e-3).unsqueeze(1)
        weight = self.embedding.weight
        weight.data.copy_(weight.data * (1.0 - alpha) + anchors.to(weight.dtype) * alpha)

    def _anchors(self, flat: torch.Tensor, sim: torch.Tensor) -> torch.Tensor:
        """One encoder feature per code (K x D), identical on every rank."""
        if self.anchor == "closest":
            best_sim, best = sim.max(0)
            return self._closest_over_ranks(best_sim, flat[best])
        sample = torch.multinomial(F.softmax(sim.t(), dim=1), num_samples=1).view(-1)
        feats = flat[sample].contiguous()
        if _distributed():
            dist.broadcast(feats, src=0)
        return feats

    @staticmethod
    def _closest_over_ranks(best_sim: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        if not _distributed():
            return feats
        world = dist.get_world_size()
        sims = [torch.empty_like(best_sim) for _ in range(world)]
        all_feats = [torch.empty_like(feats) for _ in range(world)]
        dist.all_gather(sims, best_sim.contiguous())
        dist.all_gather(all_feats, feats.contiguous())
        winner = torch.stack(sims).argmax(0)  # (K,) rank holding the closest feature
        stacked = torch.stack(all_feats)  # (world, K, D)
        return stacked[winner, torch.arange(feats.shape[0], device=feats.device)]

    @staticmethod
    def _all_reduce(counts: torch.Tensor) -> torch.Tensor:
        if _distributed():
            counts = counts.clone()
            dist.all_reduce(counts, op=dist.ReduceOp.SUM)
        return counts

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """``(B, *S)`` indices -> ``(B, D, *S)`` codes."""
        return F.embedding(indices, self.embedding.weight).movedim(-1, 1).contiguous()

    def extra_repr(self) -> str:
        return (f"codebook_size={self.codebook_size}, dim={self.dim}, distance={self.distance}, "
                f"decay={self.decay}, anchor={self.anchor}, reanchor={self.reanchor}")
