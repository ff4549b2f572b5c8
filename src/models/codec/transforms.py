"""Analysis (g_a) and synthesis (g_s) transforms of DC-VIC, with optional dual-beta conditioning.

Iwai, Miyazaki & Omachi, "Dual-Conditioned VQGAN-based Image Compression", IEEE Access 2024,
built on the ELIC transforms (He et al., CVPR 2022). Names follow the reference checkpoints.

g_a (``ElicVqEncoder``; registered as ``ElicDualBetaFtVqScEncoder`` / ``ElicVqCatScEncoder``)::

    x (3, H) -> conv1/2 -> block1 -> conv2/2 -> block2 -> attn2 -> conv3/2 (H/8)
             -> x = x + projection([vq_feat ; x])        vq_feat = [q (4) ; one_hot(k) (256)]
             -> block3 -> conv4/2 -> attn4 = y (out_ch, H/16)
    with betas: every stage output is modulated, feat * (1 + scale(c)) + shift(c)

g_s (``ElicFusionDecoder``; ``ElicDualBetaFtFeatFusionDecoder`` / ``ElicFeatFusionDecoder``),
stopped once the fusion features are collected (conv4 exists for checkpoint compatibility only)::

    y_hat -> [y_hat + init_fuse(y_hat, c)] -> attn1 -> conv1 (H/8) -> block1 ==> feat, block_1_8
          -> conv2 (H/4) -> attn2 -> block2 ==> block_1_4 -> conv3 (H/2) -> block3 ==> block_1_2
    with betas: each stage input is modulated first.
"""
from __future__ import annotations

import functools
from typing import Dict, Optional, Tuple

import torch
from torch import Tensor, nn

from src.models.codec.betas import PUBLISHED_MAX_RATE, PUBLISHED_MAX_VQ
from src.models.layers import (BetaScaleShift, FourierEncoding, ResidualBottleneckBlocks,
                               SimplifiedAttention, beta_mlp, down_conv,
                               dual_beta_condition, up_conv)
from src.utils.registry import SUBNETS

ENCODER_LAYERS = ("conv1", "block1", "conv2", "block2", "attn2", "conv3", "block3", "conv4", "attn4")
DECODER_LAYERS = ("attn1", "conv1", "block1", "conv2", "attn2", "block2", "conv3", "block3", "conv4")


class _DualBeta(nn.Module):
    """Mixin holding the beta MLP (``mlp``) and the two Fourier encoders (no state)."""

    def _init_betas(self, max_beta_1, max_beta_2, cond_ch, L, use_pi, include_x):
        self.embed_1 = FourierEncoding(L, max_beta_1, use_pi=use_pi, include_x=include_x)
        self.embed_2 = FourierEncoding(L, max_beta_2, use_pi=use_pi, include_x=include_x)
        self.mlp = beta_mlp(self.embed_1.out_ch + self.embed_2.out_ch, cond_ch)

    def condition(self, beta_1, beta_2, ref: Tensor) -> Optional[Tensor]:
        """(B, cond_ch, 1, 1), or None for an unconditioned network."""
        if not self.beta_cond:
            return None
        return dual_beta_condition(self.embed_1, self.embed_2, self.mlp, beta_1, beta_2, ref.shape[0], ref.device)

    def _ft(self, i: int, h: Tensor, cond: Optional[Tensor]) -> Tensor:
        return h if cond is None else self.beta_ft_list[i](h, cond)


class ElicVqEncoder(_DualBeta):
    def __init__(self, in_ch: int = 3, out_ch: int = 192, main_ch: int = 192,
                 block_mid_ch: int = 96, num_blocks: int = 3, res_in_res: bool = False,
                 input_feat_ch: int = 260, proj_init: bool = False, proj_init_std: float = 0.02,
                 proj_pos: str = "conv3", beta_cond: bool = True,
                 max_beta_1: Optional[float] = PUBLISHED_MAX_RATE, max_beta_2: Optional[float] = PUBLISHED_MAX_VQ,
                 cond_ch: int = 128, L: int = 10, use_pi: bool = False, include_x: bool = True):
        super().__init__()
        if proj_pos != "conv3":
            raise ValueError(f"only proj_pos='conv3' is supported (DC-VIC), got {proj_pos!r}")
        blocks = dict(mid_ch=block_mid_ch, num_blocks=num_blocks, res_in_res=res_in_res)
        self.conv1 = down_conv(in_ch, main_ch)
        self.block1 = ResidualBottleneckBlocks(main_ch, **blocks)
        self.conv2 = down_conv(main_ch, main_ch)
        self.block2 = ResidualBottleneckBlocks(main_ch, **blocks)
        self.attn2 = SimplifiedAttention(main_ch)
        self.conv3 = down_conv(main_ch, main_ch)
        self.block3 = ResidualBottleneckBlocks(main_ch, **blocks)
        self.conv4 = down_conv(main_ch, out_ch)
        self.attn4 = SimplifiedAttention(out_ch)
        self.projection = nn.Conv2d(main_ch + input_feat_ch, main_ch, kernel_size=3, padding=1)
        if proj_init:
            nn.init.zeros_(self.projection.bias)
            nn.init.trunc_normal_(self.projection.weight, std=proj_init_std)
        self.beta_cond = beta_cond
        if beta_cond:
            chs = [main_ch] * 7 + [out_ch] * 2
            self.beta_ft_list = nn.ModuleList([BetaScaleShift(cond_ch, c) for c in chs])
            self._init_betas(max_beta_1, max_beta_2, cond_ch, L, use_pi, include_x)

    def forward(self, x: Tensor, vq_feat: Tensor, beta_1=None, beta_2=None) -> Tensor:
        """x (B, 3, H, W), vq_feat (B, input_feat_ch, H/8, W/8) -> y (B, out_ch, H/16, W/16)."""
        cond = self.condition(beta_1, beta_2, x)
        for i, name in enumerate(ENCODER_LAYERS):
            x = self._ft(i, getattr(self, name)(x), cond)
            if name == "conv3":
                x = x + self.projection(torch.cat([vq_feat, x], dim=1))
        return x


class ElicFusionDecoder(_DualBeta):
    def __init__(self, fusion_layer_dict: Dict[str, str], feat_layer_name: str = "block1",
                 in_ch: int = 192, out_ch: int = 3, main_ch: int = 192, block_mid_ch: int = 96,
                 num_blocks: int = 3, use_tanh: bool = False, pixel_shuffle: bool = False,
                 res_in_res: bool = False, beta_cond: bool = True,
                 max_beta_1: Optional[float] = PUBLISHED_MAX_RATE, max_beta_2: Optional[float] = PUBLISHED_MAX_VQ,
                 cond_ch: int = 128, L: int = 10, use_pi: bool = False, include_x: bool = True,
                 beta_weight_init: bool = False, beta_weight_init_std: float = 0.02):
        super().__init__()
        unknown = [k for k in list(fusion_layer_dict) + [feat_layer_name] if k not in DECODER_LAYERS]
        if unknown:
            raise ValueError(f"unknown decoder layers {unknown}; known: {list(DECODER_LAYERS)}")
        blocks = dict(mid_ch=block_mid_ch, num_blocks=num_blocks, res_in_res=res_in_res)
        self.attn1 = SimplifiedAttention(in_ch)
        self.conv1 = up_conv(in_ch, main_ch, pixel_shuffle)
        self.block1 = ResidualBottleneckBlocks(main_ch, **blocks)
        self.conv2 = up_conv(main_ch, main_ch, pixel_shuffle)
        self.attn2 = SimplifiedAttention(main_ch)
        self.block2 = ResidualBottleneckBlocks(main_ch, **blocks)
        self.conv3 = up_conv(main_ch, main_ch, pixel_shuffle)
        self.block3 = ResidualBottleneckBlocks(main_ch, **blocks)
        self.conv4 = up_conv(main_ch, out_ch, pixel_shuffle)  # unused: kept for checkpoints
        self.fusion_layer_dict = dict(fusion_layer_dict)
        self.feat_layer = feat_layer_name
        self.use_tanh = use_tanh
        self.beta_cond = beta_cond
        if beta_cond:
            if in_ch != main_ch:
                raise ValueError("the beta-conditioned decoder needs in_ch == main_ch, "
                                 f"got {in_ch}, {main_ch}")
            chs = [in_ch, in_ch] + [main_ch] * 7
            self.beta_ft_list = nn.ModuleList([BetaScaleShift(cond_ch, c) for c in chs])
            self._init_betas(max_beta_1, max_beta_2, cond_ch, L, use_pi, include_x)
            self.init_fuse = BetaScaleShift(cond_ch, main_ch)
            if beta_weight_init:
                for m in self.init_fuse.modules():
                    if isinstance(m, nn.Conv2d):
                        nn.init.zeros_(m.bias)
                        nn.init.trunc_normal_(m.weight, std=beta_weight_init_std)

    def get_feats(self, y_hat: Tensor, beta_1=None, beta_2=None) -> Tuple[Tensor, Dict[str, Tensor]]:
        """y_hat -> (VQ-estimator input feature, {fusion key: feature})."""
        cond = self.condition(beta_1, beta_2, y_hat)
        x = y_hat if cond is None else self.init_fuse(y_hat, cond) + y_hat
        feat, fusion = None, {}
        for i, name in enumerate(DECODER_LAYERS):
            x = getattr(self, name)(self._ft(i, x, cond))
            if name == self.feat_layer:
                feat = x
            if name in self.fusion_layer_dict:
                fusion[self.fusion_layer_dict[name]] = x
            if feat is not None and len(fusion) == len(self.fusion_layer_dict):
                break
        return feat, fusion

    forward = get_feats


def _register(name: str, cls, beta_cond: bool) -> None:
    factory = functools.partial(cls, beta_cond=beta_cond)
    factory.__doc__ = f"{cls.__name__} with beta_cond={beta_cond} (reference name {name})."
    SUBNETS.register(name)(factory)


_register("ElicDualBetaFtVqScEncoder", ElicVqEncoder, True)
_register("ElicVqCatScEncoder", ElicVqEncoder, False)
_register("ElicDualBetaFtFeatFusionDecoder", ElicFusionDecoder, True)
_register("ElicFeatFusionDecoder", ElicFusionDecoder, False)
