"""The beta-conditioned PatchGAN of DC-VIC step 1-3 (PatchGAN and OASIS variants).

As in the DC-VIC reference (``DualBetaCondTamingNLayerDiscriminator``), each beta is
normalised to [-1, 1] and Fourier-encoded (L frequencies 2^k, with the value itself: 2L + 1
features), the two encodings go through a learned MLP to ``cond_ch`` (8) channels, and these
are broadcast over the image and concatenated to it::

    beta_rate, beta_vq -> FourierEncoding (21 + 21) -> Linear(42, 8) -> ReLU -> Linear(8, 8)
    -> (B, 8, H, W) ; cat with the image (B, 3, H, W) -> PatchGAN (input_nc = 11)

Parameter names equal the reference's (``main.{i}.*`` of the PatchGAN, ``mlp.{0,2}.*``), so
a discriminator state dict saved by the reference (``discriminator_iter*.pth.tar``) loads
strictly. The released files hold only ``comp_model``; no discriminator weights are published.

The OASIS variant (Sushko et al., ICLR 2021, as used by MS-ILLM and DC-VIC) is the same
network with ``out_nc = 257`` (256 VQ classes + 1 fake class) and ``keep_shape = True``:
3x3 kernels in the two stride-1 convs, so the logit map lies on the VQ grid (H/8 x W/8).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from src.models.codec.betas import PUBLISHED_MAX_RATE, PUBLISHED_MAX_VQ
from src.models.layers.conditioning import FourierEncoding, beta_mlp, dual_beta_condition
from src.utils.registry import SUBNETS

from .patchgan import PatchGANDiscriminator, init_weights

#: the reference's ``norm_type`` values -> ours
_REFERENCE_NORMS = {"batchnorm": "batch", "actnorm": "actnorm", "none": "none"}


@SUBNETS.register("DualBetaCondTamingNLayerDiscriminator")  # the reference's name: its config builds as is
@SUBNETS.register()
class DualBetaPatchGANDiscriminator(PatchGANDiscriminator):
    """PatchGAN on the image and ``cond_ch`` learned beta channels.

    Args:
        input_nc: 3 + ``cond_ch`` (checked).
        max_beta_1, max_beta_2: the largest beta_rate and beta_vq, the codec's (``DCVIC.beta_space``;
            the trainer fills them in when the config leaves them out); the published ones by default.
        L, use_pi, include_x: Fourier encoding of each beta (:class:`FourierEncoding`).
        cond_ch: width of the beta MLP and number of beta channels.
        norm / norm_type: ours (``batch``, ``actnorm``, ``none``) or the reference's spelling
            (``batchnorm``, ``actnorm``, ``none``); DC-VIC uses ``none``.
        weight_init: N(0, 0.02) conv weights (taming's ``weights_init``), drawn after the MLP is
            built, in the reference's order; the MLP keeps PyTorch's default initialisation.
        ndf, n_layers, out_nc, keep_shape, use_actnorm: as :class:`PatchGANDiscriminator`.
    """

    def __init__(self, input_nc: int = 11, ndf: int = 64, n_layers: int = 3, out_nc: int = 1,
                 keep_shape: bool = False, norm: Optional[str] = None, norm_type: Optional[str] = None,
                 use_actnorm: Optional[bool] = None, max_beta_1: float = PUBLISHED_MAX_RATE, max_beta_2: float = PUBLISHED_MAX_VQ,
                 L: int = 10, cond_ch: int = 8, use_pi: bool = False, include_x: bool = True,
                 weight_init: bool = True):
        if norm is not None and norm_type is not None:
            raise ValueError("give norm (ours) or norm_type (the reference's spelling), not both")
        if norm_type is not None:
            if norm_type not in _REFERENCE_NORMS:
                raise ValueError(f"unknown norm_type {norm_type!r}; valid: {', '.join(_REFERENCE_NORMS)}")
            norm = _REFERENCE_NORMS[norm_type]
        if input_nc != 3 + cond_ch:
            raise ValueError(f"input_nc must be 3 image channels + cond_ch = {3 + cond_ch}, got {input_nc}")
        super().__init__(input_nc=input_nc, ndf=ndf, n_layers=n_layers, norm=norm or "batch",
                         use_actnorm=use_actnorm, out_nc=out_nc, keep_shape=keep_shape, weight_init=False)
        self.embed_1 = FourierEncoding(L, max_beta_1, use_pi=use_pi, include_x=include_x)
        self.embed_2 = FourierEncoding(L, max_beta_2, use_pi=use_pi, include_x=include_x)
        self.mlp = beta_mlp(self.embed_1.out_ch + self.embed_2.out_ch, cond_ch)
        if weight_init:
            self.apply(init_weights)

    def beta_maps(self, beta_rate, beta_vq, batch: int, height: int, width: int, device) -> Tensor:
        """Betas (floats or (B,) tensors) -> (B, cond_ch, height, width) learned condition maps."""
        cond = dual_beta_condition(self.embed_1, self.embed_2, self.mlp, beta_rate, beta_vq, batch, device)
        return cond.expand(-1, -1, height, width)

    def forward(self, x: Tensor, beta_rate=None, beta_vq=None) -> Tensor:
        """(B, 3, H, W) image in [-1, 1] and its betas -> (B, out_nc, h, w) logits."""
        if beta_rate is None or beta_vq is None:
            raise ValueError("a beta-conditioned discriminator needs beta_rate and beta_vq")
        B, _, H, W = x.shape
        cond = self.beta_maps(beta_rate, beta_vq, B, H, W, x.device).to(x.dtype)
        return super().forward(torch.cat([x, cond], dim=1))
