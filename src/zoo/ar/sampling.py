"""Sampling from :class:`~src.zoo.ar.llama.LlamaC2I` with classifier-free guidance.

Ho & Salimans, "Classifier-Free Diffusion Guidance", 2022, as used for autoregressive models by
LlamaGen (Sun et al., 2024): the batch runs twice, with the class and with the null class, and
``logits = uncond + scale * (cond - uncond)``. The guided logits are divided by the temperature,
filtered by top-k (Fan et al., 2018) and nucleus / top-p (Holtzman et al., 2020) and sampled with
an optional ``torch.Generator`` (same seed, same tokens). A KV cache makes each step one token.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Set to -inf every logit outside the ``top_k`` largest (0: all) and outside the smallest set
    whose probability reaches ``top_p`` (1.0: all); the most likely token always survives."""
    out = logits.clone()
    if top_k and 0 < top_k < out.shape[-1]:
        kth = torch.topk(out, top_k, dim=-1).values[..., -1:]
        out[out < kth] = float("-inf")
    if top_p < 1.0:
        sorted_logits, order = torch.sort(out, descending=True, dim=-1)
        cum = F.softmax(sorted_logits, dim=-1).cumsum(-1)
        remove = cum - F.softmax(sorted_logits, dim=-1) >= top_p  # mass before this token already >= p
        remove[..., 0] = False
        out.scatter_(-1, order, sorted_logits.masked_fill(remove, float("-inf")))
    return out


@torch.no_grad()
def sample(model, labels: torch.Tensor, cfg_scale: float = 1.0, temperature: float = 1.0, top_k: int = 0,
           top_p: float = 1.0, generator: Optional[torch.Generator] = None,
           on_logits: Optional[Callable[[int, torch.Tensor, torch.Tensor], None]] = None) -> torch.Tensor:
    """``labels`` (B,) -> tokens (B, seq_len). ``cfg_scale`` 1: no guidance (one pass);
    ``temperature`` <= 0: greedy. ``on_logits(t, guided_logits, sampled)`` sees every step."""
    was_training = model.training
    model.eval()
    b, device = labels.shape[0], labels.device
    guided = cfg_scale != 1.0
    cls = torch.cat([labels, torch.full_like(labels, model.null_class)]) if guided else labels
    cache = model.new_cache()
    x = model.cls_embed(cls).unsqueeze(1)
    tokens = torch.empty(b, model.seq_len, dtype=torch.long, device=device)
    for t in range(model.seq_len):
        logits = model.run(x, start=t, cache=cache)[:, -1]
        if guided:
            cond, uncond = logits.chunk(2)
            logits = uncond + cfg_scale * (cond - uncond)
        if temperature <= 0:
            nxt = logits.argmax(-1)
        else:
            probs = F.softmax(filter_logits(logits / temperature, top_k, top_p), dim=-1)
            nxt = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        if on_logits is not None:
            on_logits(t, logits, nxt)
        tokens[:, t] = nxt
        x = model.tok_embed(torch.cat([nxt, nxt]) if guided else nxt).unsqueeze(1)
    model.train(was_training)
    return tokens
