"""Cluster tokenizer: online k-means of a frozen teacher's patch features (the seed's "Ours -
Cluster"), with no encoder and no decoder of its own.

    x -> frozen teacher (CLIP ViT-B/16 by default) -> f (B, D, h, w) -> l2-normalise
      -> nearest of 8192 unit codes (cosine) -> indices
    codebook (``codebook``):
      "gradient" - the seed's: codes trained by Adam on the codebook loss ||e_k - sg(f)||^2, with
                   CVQ re-anchoring of dead codes to their closest feature (Zheng & Vedaldi,
                   "Online Clustered Codebook", ICCV 2023; ``ClusteredVectorQuantizer``)
      "ema"      - EMA k-means steps (as VQ-KD's codebook, Peng et al., BEiT v2, 2022) with the same
                   re-anchoring, and no gradients at all

A pixel decoder (``PixelDecoder``) is trained afterwards on the frozen indices. Unlike VQ-KD,
encoding needs the teacher.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping

import torch

from src.utils.registry import MODELS

from src.models.vq.quantizers.cvq import ClusteredVectorQuantizer

from .ema_quantizer import EMACosineQuantizer
from .teachers import TeacherBacked, teacher_dim


@MODELS.register("ClusterTokenizer")
class ClusterTokenizer(TeacherBacked):
    """Args: ``teacher`` (a teacher section), ``codebook`` (``"gradient"`` or ``"ema"``, see the
    module doc), ``codebook_size``, ``decay`` (EMA of the code usage, and of the codes with
    ``"ema"``), ``reanchor`` (CVQ dead-code re-anchoring), ``kmeans_init`` (``"ema"`` only),
    ``image_size``, ``patch_size``."""

    def __init__(self, *, teacher: Mapping[str, Any], image_size: int = 224, patch_size: int = 16,
                 codebook_size: int = 8192, decay: float = 0.99, reanchor: bool = True,
                 kmeans_init: bool = True, codebook: str = "ema"):
        super().__init__({"image_size": image_size, **teacher})
        dim = teacher_dim(self.teacher_cfg)
        if codebook == "ema":
            self.quantize = EMACosineQuantizer(codebook_size, dim, beta=0.0, decay=decay, reanchor=reanchor,
                                               kmeans_init=kmeans_init)
        elif codebook == "gradient":
            self.quantize = ClusteredVectorQuantizer(codebook_size, dim, beta=0.0, distance="cos", decay=decay,
                                                     anchor="closest", reanchor=reanchor)
        else:
            raise ValueError(f"codebook must be 'gradient' or 'ema', got {codebook!r}")
        self.codebook = codebook
        self.downsample_factor = patch_size
        self.code_dim = self.quantize.dim

    def encode(self, x: torch.Tensor):
        """x in [-1, 1] -> (codes (B, D, h, w), indices (B, h, w))."""
        q = self.quantize(self._features(x))
        return q.quantized, q.indices

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        """Teacher features, l2-normalised for the gradient codebook (the EMA one normalises itself)."""
        f = self.teacher_features(x)
        return torch.nn.functional.normalize(f, dim=1) if self.codebook == "gradient" else f

    def indices_to_latent(self, indices: torch.Tensor) -> torch.Tensor:
        return self.quantize.indices_to_codes(indices)

    def forward(self, x: torch.Tensor) -> Dict[str, Any]:
        """``{"features": assigned codes, "target": normalised features, "quant"}`` (in training mode
        one k-means step, or the codebook loss and a re-anchoring step)."""
        f = self._features(x)
        q = self.quantize(f)
        return {"features": q.quantized, "target": torch.nn.functional.normalize(f, dim=1), "quant": q}
