"""Pixel decoders for tokenizers without one (VQ-KD, Cluster), trained with the tokenizer frozen.

The seed's "decoder" stage: BEiT v2's VQ-KD decoder regresses teacher features, and the Cluster
tokenizer has no decoder at all, so an image decoder is trained on their frozen indices:

    x -> frozen tokenizer.encode -> (codes z_q (B, D, h, w), indices) -> post_quant_conv (1x1)
      -> VQGAN decoder (Esser et al., "Taming Transformers", CVPR 2021) -> x_hat

trained with taming's losses (L1 + LPIPS + PatchGAN) by ``PixelDecoderTrainer``. A LlamaGen-style
decoder (Sun et al., "Autoregressive Model Beats Diffusion: Llama for Scalable Image Generation",
2024) is the same convolutional decoder at LlamaGen's widths (``config/tokenizer/decoder/llamagen_*``).

The model mimics :class:`~src.models.vq.vqgan.VQGAN` (``encode``, ``decode_indices``, ``quantize``,
``downsample_factor``, ``get_last_layer``, ``forward -> {"x_hat", "quant"}``), so the tokenizer
scripts and the VQGAN trainer's losses and validation apply unchanged.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping

import torch
from torch import nn

from src.models.vq.backbone import Decoder
from src.models.vq.quantizers import QuantizerOutput, codebook_usage
from src.utils.registry import MODELS

DECODER_KEYS = ("ch", "ch_mult", "num_res_blocks", "attn_resolutions", "resolution", "z_channels", "dropout")


@MODELS.register("PixelDecoder")
class PixelDecoder(nn.Module):
    """Args: ``tokenizer`` (the frozen tokenizer's model section), ``ddconfig`` (VQGAN decoder
    keys :data:`DECODER_KEYS` plus ``out_ch``); ``2 ** (len(ch_mult) - 1)`` must equal the
    tokenizer's patch size."""

    def __init__(self, *, tokenizer: Mapping[str, Any], ddconfig: Mapping[str, Any]):
        super().__init__()
        dd = {"dropout": 0.0, "out_ch": 3, **ddconfig}
        unknown = sorted(set(dd) - set(DECODER_KEYS) - {"out_ch", "in_channels", "double_z"})
        if unknown:
            raise KeyError(f"ddconfig: unknown keys {unknown}; valid: {', '.join(DECODER_KEYS)}, out_ch")
        self.tokenizer = MODELS.build(dict(tokenizer)).requires_grad_(False).eval()
        self.downsample_factor = self.tokenizer.downsample_factor
        if 2 ** (len(dd["ch_mult"]) - 1) != self.downsample_factor:
            raise ValueError(f"ddconfig.ch_mult {list(dd['ch_mult'])} upsamples by {2 ** (len(dd['ch_mult']) - 1)}, "
                             f"but the tokenizer's patch size is {self.downsample_factor}")
        self.post_quant_conv = nn.Conv2d(self.tokenizer.code_dim, dd["z_channels"], 1)
        self.decoder = Decoder(out_ch=dd["out_ch"], **{k: dd[k] for k in DECODER_KEYS})

    @property
    def quantize(self) -> nn.Module:
        """The tokenizer's codebook (``codebook_size``, ``indices_to_codes``)."""
        return self.tokenizer.quantize

    def train(self, mode: bool = True) -> "PixelDecoder":
        super().train(mode)
        self.tokenizer.eval()  # frozen: no codebook updates, no dropout
        return self

    @torch.no_grad()
    def encode(self, x: torch.Tensor):
        return self.tokenizer.encode(x)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(latent))

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """``(B, h, w)`` indices -> image ``(B, 3, h f, w f)`` in about [-1, 1]."""
        return self.decode(self.tokenizer.indices_to_latent(indices))

    def forward(self, x: torch.Tensor) -> Dict[str, Any]:
        latent, indices = self.encode(x)
        zero = latent.new_zeros(())
        quant = QuantizerOutput(quantized=latent, indices=indices, loss=zero,
                                stats=codebook_usage(indices, self.quantize.codebook_size))
        return {"x_hat": self.decode(latent.detach()), "quant": quant}

    def get_last_layer(self) -> torch.Tensor:
        return self.decoder.conv_out.weight
