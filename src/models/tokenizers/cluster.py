"""Cluster tokenizer: online k-means of a frozen teacher's patch features (the seed's "Ours -
Cluster"), with no encoder and no decoder of its own.

    x -> frozen teacher (CLIP ViT-B/16 by default) -> f (B, D, h, w) -> l2-normalise
      -> nearest of 8192 unit codes (cosine) -> indices
    codebook: EMA k-means steps (as VQ-KD's codebook, Peng et al., BEiT v2, 2022) and CVQ-style
    re-anchoring of dead codes (Zheng & Vedaldi, "Online Clustered Codebook", ICCV 2023)

Nothing is trained by gradients; a pixel decoder (``PixelDecoder``) is trained afterwards on the
frozen indices. Unlike VQ-KD, encoding needs the teacher.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping

import torch

from src.utils.registry import MODELS

from .ema_quantizer import EMACosineQuantizer
from .teachers import TeacherBacked, teacher_dim


@MODELS.register("ClusterTokenizer")
class ClusterTokenizer(TeacherBacked):
    """Args: ``teacher`` (a teacher section), ``codebook_size``, ``decay`` (EMA of codes and usage),
    ``reanchor`` (CVQ dead-code re-anchoring), ``kmeans_init``, ``image_size``, ``patch_size``."""

    def __init__(self, *, teacher: Mapping[str, Any], image_size: int = 224, patch_size: int = 16,
                 codebook_size: int = 8192, decay: float = 0.99, reanchor: bool = True,
                 kmeans_init: bool = True):
        super().__init__({"image_size": image_size, **teacher})
        self.quantize = EMACosineQuantizer(codebook_size, teacher_dim(self.teacher_cfg), beta=0.0, decay=decay,
                                           reanchor=reanchor, kmeans_init=kmeans_init)
        self.downsample_factor = patch_size
        self.code_dim = self.quantize.dim

    def encode(self, x: torch.Tensor):
        """x in [-1, 1] -> (unit codes (B, D, h, w), indices (B, h, w))."""
        q = self.quantize(self.teacher_features(x))
        return q.quantized, q.indices

    def indices_to_latent(self, indices: torch.Tensor) -> torch.Tensor:
        return self.quantize.indices_to_codes(indices)

    def forward(self, x: torch.Tensor) -> Dict[str, Any]:
        """``{"features": assigned codes, "target": normalised features, "quant"}`` (one k-means step
        in training mode)."""
        f = self.teacher_features(x)
        q = self.quantize(f)
        return {"features": q.quantized, "target": torch.nn.functional.normalize(f, dim=1), "quant": q}
