"""Mean estimated bpp of a validation set for many beta_rate values at once.

One pass = the set once, each batch repeated K times with K beta_rate values (betas are
per-sample in DC-VIC). Only the rate path runs: VQ indices come from the set's ``.npy`` files
(or are computed once and kept), then ``g_a`` and the entropy models; the decoder is skipped
because the bpp does not depend on it. In eval mode the likelihoods are those of the rounded
latents, i.e. exactly the ``bpp`` that ``DCVIC.forward`` returns.
"""
from __future__ import annotations

import logging
from typing import List, Sequence

import torch

from src.models.entropy.rate import bpp_from_likelihoods
from src.ratecontrol.valset import ValSet

log = logging.getLogger(__name__)


@torch.no_grad()
def ensure_vq_indices(model, data: ValSet, batch_size: int) -> ValSet:
    """Fill ``data.indices`` with the model's frozen VQGAN when the set has none (once)."""
    if data.indices is not None:
        if int(data.indices.max()) >= model.n_embed:
            raise ValueError(f"stored VQ indices reach {int(data.indices.max())} but the model's "
                             f"VQGAN has {model.n_embed} codes: the set was built with another VQGAN")
        return data
    log.info("computing VQ indices of %d images once (no .npy files)", len(data))
    out = [model.vq_encode(x.to(model.device))[1].cpu() for x, _ in data.batches(batch_size)]
    data.indices = torch.cat(out)
    return data


class ModelRateFunction:
    """``f(beta_rates) -> mean bpp of each`` over ``data`` for a fixed ``beta_vq``.

    ``max_betas_per_pass`` bounds how many betas share one forward (batch_size * K images);
    more betas are split over several forwards of the same pass.
    """

    def __init__(self, model, data: ValSet, beta_vq: float, batch_size: int,
                 max_betas_per_pass: int = 8):
        self.model, self.data, self.beta_vq = model, data, float(beta_vq)
        self.batch_size, self.max_k = batch_size, max_betas_per_pass
        ensure_vq_indices(model, data, batch_size)

    @torch.no_grad()
    def _sums(self, x: torch.Tensor, idx: torch.Tensor, betas: Sequence[float]) -> torch.Tensor:
        """Sum of per-image bpp of one batch for each beta -> (K,)."""
        k, b = len(betas), x.shape[0]
        dev = self.model.device
        xx = x.to(dev).repeat(k, 1, 1, 1)
        ii = idx.to(dev).repeat(k, 1, 1)
        br, bv = self.model.beta_space.tensors(torch.tensor(list(betas)).repeat_interleave(b), self.beta_vq,
                                               k * b, dev)
        y = self.model.encode(xx, br, bv, vq_indices=ii)["y"]
        lik = self.model.entropy(y, training=False)["likelihoods"]
        bpp = bpp_from_likelihoods({"y": lik["y"], "z": lik["z"]}, x.shape[-2] * x.shape[-1])
        return bpp.view(k, b).sum(dim=1).double().cpu()

    def __call__(self, beta_rates: Sequence[float]) -> List[float]:
        betas = [float(b) for b in beta_rates]
        total = torch.zeros(len(betas), dtype=torch.float64)
        for x, idx in self.data.batches(self.batch_size):
            for s in range(0, len(betas), self.max_k):
                total[s:s + self.max_k] += self._sums(x, idx, betas[s:s + self.max_k])
        means = (total / len(self.data)).tolist()
        log.debug("beta_vq %.3f: %s", self.beta_vq,
                  ", ".join(f"{b:.4f}->{m:.5f}" for b, m in zip(betas, means)))
        return means
