"""A Llama-style class-to-image transformer over tokenizer indices (the proposal network).

Sun et al., "Autoregressive Model Beats Diffusion: Llama for Scalable Image Generation"
(LlamaGen), 2024, after Touvron et al. (Llama, 2023): pre-norm decoder-only transformer with
RMSNorm (Zhang & Sennrich, 2019), rotary position embeddings (Su et al., RoFormer, 2021) and
SwiGLU feed-forward layers (Shazeer, 2020). The class is the first token::

    input    [c, t_0, t_1, ..., t_{N-2}]      c = class embedding (num_classes + 1 rows; the last
    predicts [t_0, t_1, ..., t_{N-1}]              is the "null" class used for guidance)

During training the class is replaced by the null class with probability ``class_dropout``
(10 %), so the same network gives the unconditional logits of classifier-free guidance (Ho &
Salimans, 2022); see :func:`src.zoo.ar.sampling.sample`. Positions use rotary embeddings:
``rope: 2d`` (LlamaGen's; a square grid) rotates half of each head's channel pairs by the row and
half by the column of the token (the class token is not rotated); ``rope: 1d`` uses the raster
index and works for any sequence (a 1D tokenizer's).
"""
from __future__ import annotations

from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from src.utils.registry import MODELS

KVCache = List[Dict[str, torch.Tensor]]


class RMSNorm(nn.Module):
    """``x / rms(x) * g`` (no mean subtraction, no bias)."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * self.weight


def rope_tables(seq_len: int, head_dim: int, base: float = 10000.0):
    """cos / sin tables ``(seq_len, head_dim / 2)`` of the rotary embedding."""
    inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2).float() / head_dim)
    angles = torch.outer(torch.arange(seq_len).float(), inv_freq)
    return angles.cos(), angles.sin()


def rope_tables_2d(seq_len: int, head_dim: int, base: float = 10000.0):
    """cos / sin tables ``(seq_len, head_dim / 2)`` of 2D rotary embeddings for the inputs
    ``[class, t_0, ..., t_{seq_len-2}]`` of a square ``s x s`` grid (``s * s == seq_len``): position 0
    (the class) gets angle 0; the input holding ``t_k`` gets row ``k // s`` angles in the first
    ``head_dim / 4`` pairs and column ``k % s`` angles in the last ``head_dim / 4``, each with the
    frequencies ``base ** (-4 j / head_dim)``."""
    side = int(round(seq_len ** 0.5))
    if side * side != seq_len:
        raise ValueError(f"rope '2d' needs a square token grid, got seq_len {seq_len}; use rope '1d'")
    if head_dim % 4:
        raise ValueError(f"rope '2d' needs a head size divisible by 4, got {head_dim}")
    inv_freq = 1.0 / base ** (torch.arange(0, head_dim // 2, 2).float() / (head_dim // 2))
    k = torch.arange(seq_len - 1)
    angles = torch.cat([torch.outer((k // side).float(), inv_freq), torch.outer((k % side).float(), inv_freq)], 1)
    angles = torch.cat([angles.new_zeros(1, head_dim // 2), angles])
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs ``(x_2i, x_2i+1)`` of ``x`` (B, H, N, Dh) by the angles of its positions."""
    x1, x2 = x.float()[..., 0::2], x.float()[..., 1::2]
    out = torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)
    return out.to(x.dtype)


class LlamaAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.wqkv = nn.Linear(dim, 3 * dim, bias=False)
        self.wo = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                cache: Optional[Dict[str, torch.Tensor]] = None) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.wqkv(x).view(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        first = cache is None or "k" not in cache
        if cache is not None:
            if not first:
                k, v = torch.cat([cache["k"], k], dim=2), torch.cat([cache["v"], v], dim=2)
            cache["k"], cache["v"] = k, v
        # A chunk that starts the sequence is causal; a single new token sees everything cached.
        if not first and n > 1:
            raise ValueError("cached decoding takes one new token at a time")
        out = F.scaled_dot_product_attention(q, k, v, is_causal=first and n > 1)
        return self.wo(out.transpose(1, 2).reshape(b, n, c))


class SwiGLU(nn.Module):
    """``w2(silu(w1 x) * w3 x)``; hidden width ``2/3 * 4 dim`` rounded up to ``multiple_of``."""

    def __init__(self, dim: int, multiple_of: int = 256):
        super().__init__()
        hidden = int(2 * 4 * dim / 3)
        hidden = multiple_of * ((hidden + multiple_of - 1) // multiple_of)
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class LlamaBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, multiple_of: int):
        super().__init__()
        self.attention_norm, self.ffn_norm = RMSNorm(dim), RMSNorm(dim)
        self.attention = LlamaAttention(dim, num_heads)
        self.feed_forward = SwiGLU(dim, multiple_of)

    def forward(self, x, cos, sin, cache=None):
        x = x + self.attention(self.attention_norm(x), cos, sin, cache)
        return x + self.feed_forward(self.ffn_norm(x))


@MODELS.register("LlamaC2I")
class LlamaC2I(nn.Module):
    """Class-conditional autoregressive transformer.

    Args:
        vocab_size: codebook size of the tokenizer. seq_len: tokens per image (h * w).
        num_classes: classes (one more embedding row is the null class).
        dim, depth, num_heads, multiple_of: widths (LlamaGen-B: 768, 12, 12).
        class_dropout: probability of replacing the class by the null class in training.
        rope: ``"1d"`` (raster index) or ``"2d"`` (row and column; LlamaGen's).
    """

    def __init__(self, *, vocab_size: int = 8192, seq_len: int = 256, num_classes: int = 1000, dim: int = 768,
                 depth: int = 12, num_heads: int = 12, multiple_of: int = 256, class_dropout: float = 0.1,
                 rope_base: float = 10000.0, rope: str = "1d"):
        super().__init__()
        if dim % num_heads or (dim // num_heads) % 2:
            raise ValueError(f"dim {dim} / num_heads {num_heads} must give an even head size")
        self.vocab_size, self.seq_len, self.num_classes = vocab_size, seq_len, num_classes
        self.class_dropout = class_dropout
        self.cls_embed = nn.Embedding(num_classes + 1, dim)
        self.tok_embed = nn.Embedding(vocab_size, dim)
        self.layers = nn.ModuleList(LlamaBlock(dim, num_heads, multiple_of) for _ in range(depth))
        self.norm = RMSNorm(dim)
        self.head = nn.Linear(dim, vocab_size, bias=False)
        if rope not in ("1d", "2d"):
            raise ValueError(f"rope must be '1d' or '2d', got {rope!r}")
        tables = rope_tables_2d if rope == "2d" else rope_tables
        cos, sin = tables(seq_len, dim // num_heads, rope_base)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)

    @property
    def null_class(self) -> int:
        return self.num_classes

    def drop_classes(self, labels: torch.Tensor) -> torch.Tensor:
        """Replace each label by the null class with probability ``class_dropout`` (training only)."""
        if not self.training or self.class_dropout <= 0:
            return labels
        drop = torch.rand(labels.shape, device=labels.device) < self.class_dropout
        return torch.where(drop, torch.full_like(labels, self.null_class), labels)

    def run(self, x: torch.Tensor, start: int = 0, cache: Optional[KVCache] = None) -> torch.Tensor:
        """Embedded inputs ``(B, n, dim)`` at positions ``start..start+n-1`` -> logits ``(B, n, V)``."""
        n = x.shape[1]
        if start + n > self.seq_len:
            raise ValueError(f"positions up to {start + n} exceed seq_len {self.seq_len}")
        cos, sin = self.rope_cos[start:start + n], self.rope_sin[start:start + n]
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, None if cache is None else cache[i])
        return self.head(self.norm(x)).float()

    def new_cache(self) -> KVCache:
        return [{} for _ in self.layers]

    def forward(self, tokens: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: ``tokens`` (B, N) long, ``labels`` (B,) -> logits (B, N, V) where
        ``logits[:, t]`` predicts ``tokens[:, t]``. Class dropout applies in training mode."""
        if tokens.shape[1] != self.seq_len:
            raise ValueError(f"expected {self.seq_len} tokens per image, got {tokens.shape[1]}")
        cls = self.cls_embed(self.drop_classes(labels)).unsqueeze(1)
        x = torch.cat([cls, self.tok_embed(tokens[:, :-1])], dim=1)
        return self.run(x)
