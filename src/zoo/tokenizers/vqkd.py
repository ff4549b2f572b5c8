"""VQ-KD: vector-quantised knowledge distillation (Peng et al., "BEiT v2: Masked Image Modeling
with Vector-Quantized Visual Tokenizers", 2022).

    x -> ViT encoder -> task layer (Linear, Tanh, Linear) -> z (B, 32, h, w)
      -> EMA cosine codebook, 8192 x 32 -> z_q -> shallow ViT decoder -> task layer -> f_hat (B, D_t, h, w)
    target: a frozen teacher's last-layer patch features f (CLIP ViT-B/16 by default)
    loss (trainer): mean over tokens of 1 - cos(f_hat, f), plus the codebook's commitment term

``encode(x) -> (z_q, indices)`` is all a pixel decoder or a proposal network needs; the teacher is
only built when ``forward`` (training) runs, so decoding a trained VQ-KD needs no teacher weights.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

import torch
from torch import nn

from src.utils.registry import MODELS

from .ema_quantizer import EMACosineQuantizer
from .teachers import TeacherBacked, teacher_dim
from .vit import TokenTransformer, ViTEncoder


def task_layer(in_dim: int, out_dim: int) -> nn.Module:
    """BEiT v2's ``encode_task_layer`` / ``decode_task_layer``: Linear, Tanh, Linear."""
    return nn.Sequential(nn.Linear(in_dim, in_dim), nn.Tanh(), nn.Linear(in_dim, out_dim))


def _channels_last(fn: nn.Module, z: torch.Tensor) -> torch.Tensor:
    return fn(z.movedim(1, -1)).movedim(-1, 1)


@MODELS.register("VQKD")
class VQKD(TeacherBacked):
    """VQ-KD tokenizer. ``encoder`` / ``decoder``: ``{dim, depth, num_heads}`` of the two ViTs;
    ``teacher``: a :func:`~src.zoo.tokenizers.teachers.build_teacher` section."""

    def __init__(self, *, teacher: Mapping[str, Any], image_size: int = 224, patch_size: int = 16,
                 encoder: Optional[Mapping[str, int]] = None, decoder: Optional[Mapping[str, int]] = None,
                 codebook_size: int = 8192, code_dim: int = 32, beta: float = 1.0, decay: float = 0.99,
                 kmeans_init: bool = True):
        teacher = {"image_size": image_size, **teacher}
        super().__init__(teacher)
        enc = {"dim": 768, "depth": 12, "num_heads": 12, **(encoder or {})}
        dec = {"dim": 768, "depth": 1, "num_heads": 12, **(decoder or {})}
        self.encoder = ViTEncoder(image_size, patch_size, **enc)
        self.encode_task_layer = task_layer(enc["dim"], code_dim)
        self.quantize = EMACosineQuantizer(codebook_size, code_dim, beta=beta, decay=decay,
                                           kmeans_init=kmeans_init)
        num_tokens = (image_size // patch_size) ** 2
        self.decoder = TokenTransformer(code_dim, dec["dim"], num_tokens, **dec)
        self.decode_task_layer = task_layer(dec["dim"], teacher_dim(teacher))
        self.downsample_factor = patch_size
        self.code_dim = code_dim

    def encode_continuous(self, x: torch.Tensor) -> torch.Tensor:
        return _channels_last(self.encode_task_layer, self.encoder(x))

    def encode(self, x: torch.Tensor):
        """x in [-1, 1] -> (unit codes (B, 32, h, w), indices (B, h, w))."""
        q = self.quantize(self.encode_continuous(x))
        return q.quantized, q.indices

    def decode_features(self, z_q: torch.Tensor) -> torch.Tensor:
        """Codes -> predicted teacher features ``(B, D_t, h, w)``."""
        return _channels_last(self.decode_task_layer, self.decoder(z_q))

    def indices_to_latent(self, indices: torch.Tensor) -> torch.Tensor:
        return self.quantize.indices_to_codes(indices)

    def forward(self, x: torch.Tensor) -> Dict[str, Any]:
        """``{"features": f_hat, "target": teacher features, "quant": QuantizerOutput}``."""
        q = self.quantize(self.encode_continuous(x))
        return {"features": self.decode_features(q.quantized), "target": self.teacher_features(x), "quant": q}
