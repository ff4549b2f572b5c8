"""The 1D tokenizer: an image becomes a sequence of N discrete tokens, decoded so that the
sequence has the left-to-right dependencies an autoregressive model assumes.

Wu et al., "AliTok: Towards Sequence Modeling Alignment between Tokenizer and Autoregressive
Model", 2025. With g = image_size / patch_size and P prefix tokens, N = P + g*g::

    encoder (bidirectional ViT): [g*g patch tokens | N learned latent tokens] -> LN -> blocks
        -> the N latent outputs -> LN -> Linear -> z (B, code_dim, N)
    quantizer: VQ (l2, commitment 0.25); ``clustering_vq`` re-anchors dead codes as CVQ-VAE
    decoder: Linear(code_dim -> width), S learned start tokens in front, positions, LN, blocks
        -> LN of the last g*g outputs -> Linear -> p*p*3 pixels per patch -> 1x1 conv -> tanh
    stage 1: ``causal_decoder``: output t attends to start tokens and tokens <= t only, so patch
        j is decoded from tokens 0 .. P + j (the P prefix tokens carry what every patch needs)
    stage 2: ``freeze_encoder``: encoder, latent tokens and codebook stay as stage 1 left them
        (eval mode, no gradients, no codebook updates); a bidirectional decoder is trained

Sizes of the paper's model: 256 px, patch 16, 17 prefix tokens (N = 273), 4096 codes of
dimension 32, encoder 768 x 12 layers x 12 heads, decoder 1024 x 24 x 16, one start token in
stage 1 and 32 in stage 2. Not reproduced: stage 1 of the paper also decodes a small auxiliary
image from the prefix tokens; here they are trained only through the patches that attend to them.

Images must be exactly ``image_size`` (the number of tokens is fixed); ``downsample_factor`` is the
patch size, for the tools that pad to it.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

import torch
from torch import nn

from src.models.vq.quantizers import ClusteredVectorQuantizer
from src.utils.registry import MODELS

from .vit import Block, PatchEmbed, causal_mask

ENCODER = {"dim": 768, "depth": 12, "num_heads": 12, "mlp_ratio": 4.0}
DECODER = {"dim": 1024, "depth": 24, "num_heads": 16, "mlp_ratio": 4.0, "num_start_tokens": 1}


def _table(n: int, dim: int) -> nn.Parameter:
    return nn.Parameter(torch.randn(n, dim) * dim ** -0.5)


class SequenceEncoder(nn.Module):
    """Bidirectional ViT over image patches and ``num_tokens`` learned latent tokens."""

    def __init__(self, grid: int, patch_size: int, num_tokens: int, code_dim: int, dim: int, depth: int,
                 num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.patch_embed = PatchEmbed(patch_size, 3, dim)
        self.patch_pos = _table(grid * grid, dim)
        self.latent_tokens = _table(num_tokens, dim)
        self.latent_pos = _table(num_tokens, dim)
        self.norm_pre = nn.LayerNorm(dim)
        self.blocks = nn.ModuleList(Block(dim, num_heads, mlp_ratio) for _ in range(depth))
        self.norm_post = nn.LayerNorm(dim)
        self.proj_out = nn.Linear(dim, code_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        patches = self.patch_embed(x).flatten(2).transpose(1, 2) + self.patch_pos
        latents = (self.latent_tokens + self.latent_pos).expand(x.shape[0], -1, -1)
        h = self.norm_pre(torch.cat([patches, latents], dim=1))
        for blk in self.blocks:
            h = blk(h)
        z = self.proj_out(self.norm_post(h[:, patches.shape[1]:]))
        return z.transpose(1, 2)  # (B, code_dim, N)


class SequenceDecoder(nn.Module):
    """Tokens ``(B, code_dim, N)`` -> image; causal or bidirectional attention."""

    def __init__(self, grid: int, patch_size: int, num_tokens: int, code_dim: int, dim: int, depth: int,
                 num_heads: int, mlp_ratio: float = 4.0, num_start_tokens: int = 1, causal: bool = True):
        super().__init__()
        self.grid, self.patch_size, self.causal = grid, patch_size, causal
        self.proj_in = nn.Linear(code_dim, dim)
        self.start_tokens = _table(num_start_tokens, dim)
        self.pos = _table(num_start_tokens + num_tokens, dim)
        self.norm_pre = nn.LayerNorm(dim)
        self.blocks = nn.ModuleList(Block(dim, num_heads, mlp_ratio) for _ in range(depth))
        self.norm_post = nn.LayerNorm(dim)
        self.to_pixels = nn.Linear(dim, patch_size * patch_size * 3)
        self.conv_out = nn.Conv2d(3, 3, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        b = z.shape[0]
        h = torch.cat([self.start_tokens.expand(b, -1, -1), self.proj_in(z.transpose(1, 2))], dim=1)
        h = self.norm_pre(h + self.pos)
        mask = causal_mask(h.shape[1], h.device) if self.causal else None
        for blk in self.blocks:
            h = blk(h, mask)
        g, p = self.grid, self.patch_size
        pixels = self.to_pixels(self.norm_post(h[:, -g * g:]))  # (B, g*g, p*p*3)
        image = pixels.view(b, g, g, p, p, 3).permute(0, 5, 1, 3, 2, 4).reshape(b, 3, g * p, g * p)
        return torch.tanh(self.conv_out(image))


@MODELS.register("OneDTokenizer")
class OneDTokenizer(nn.Module):
    """See the module docstring. ``encoder`` / ``decoder``: overrides of :data:`ENCODER` /
    :data:`DECODER` (``dim``, ``depth``, ``num_heads``, ``mlp_ratio``; ``num_start_tokens``)."""

    def __init__(self, *, image_size: int = 256, patch_size: int = 16, num_prefix_tokens: int = 17,
                 codebook_size: int = 4096, code_dim: int = 32, commitment: float = 0.25,
                 clustering_vq: bool = True, causal_decoder: bool = True, freeze_encoder: bool = False,
                 encoder: Optional[Mapping[str, Any]] = None, decoder: Optional[Mapping[str, Any]] = None):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
        grid = image_size // patch_size
        self.image_size, self.downsample_factor = image_size, patch_size
        self.num_tokens = num_prefix_tokens + grid * grid
        self.num_prefix_tokens = num_prefix_tokens
        self.encoder = SequenceEncoder(grid, patch_size, self.num_tokens, code_dim, **{**ENCODER, **(encoder or {})})
        self.quantize = ClusteredVectorQuantizer(codebook_size, code_dim, beta=commitment, distance="l2",
                                                 reanchor=clustering_vq)
        self.decoder = SequenceDecoder(grid, patch_size, self.num_tokens, code_dim, causal=causal_decoder,
                                       **{**DECODER, **(decoder or {})})
        self.apply(_init_weights)
        self.frozen_encoder = freeze_encoder
        if freeze_encoder:
            for part in self.frozen_parts():
                part.requires_grad_(False)

    def frozen_parts(self):
        """What stage 2 keeps fixed: the encoder (latent tokens included) and the codebook."""
        return [self.encoder, self.quantize]

    def train(self, mode: bool = True) -> "OneDTokenizer":
        super().train(mode)
        if self.frozen_encoder:
            for part in self.frozen_parts():
                part.eval()  # no codebook updates from a frozen stage
        return self

    def _check_size(self, x: torch.Tensor) -> None:
        if tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            raise ValueError(f"the 1D tokenizer codes {self.image_size}x{self.image_size} images into "
                             f"{self.num_tokens} tokens; got {tuple(x.shape[-2:])} (resize or crop first, "
                             f"e.g. --size {self.image_size})")

    def _quantize(self, x: torch.Tensor):
        z = self.encoder(x)
        with torch.autocast(z.device.type, enabled=False):  # code search in float32 under bf16 autocast
            return self.quantize(z.float())

    def encode(self, x: torch.Tensor):
        """x in [-1, 1] -> (codes (B, code_dim, N), indices (B, N))."""
        self._check_size(x)
        q = self._quantize(x)
        return q.quantized, q.indices

    def decode(self, z_q: torch.Tensor) -> torch.Tensor:
        return self.decoder(z_q)

    def indices_to_latent(self, indices: torch.Tensor) -> torch.Tensor:
        if indices.dim() != 2 or indices.shape[1] != self.num_tokens:
            raise ValueError(f"expected (B, {self.num_tokens}) token indices, got {tuple(indices.shape)}")
        return self.quantize.indices_to_codes(indices)

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """(B, N) token indices -> images in [-1, 1]."""
        return self.decode(self.indices_to_latent(indices))

    def forward(self, x: torch.Tensor) -> Dict[str, Any]:
        self._check_size(x)
        q = self._quantize(x)
        return {"x_hat": self.decode(q.quantized), "quant": q}

    def get_last_layer(self) -> torch.Tensor:
        """The weight the adaptive GAN weight is measured at."""
        return self.decoder.conv_out.weight


def _init_weights(module: nn.Module) -> None:
    """Truncated-normal (std 0.02) linear and convolution weights, zero biases (ViT practice)."""
    if isinstance(module, (nn.Linear, nn.Conv2d)):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
