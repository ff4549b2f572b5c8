"""VQ-index estimator and SFT fusion into the frozen VQGAN decoder (DC-VIC decoder side).

Iwai et al., "Dual-Conditioned VQGAN-based Image Compression", IEEE Access 2024; the estimator
follows FeMaSR (Chen et al., ACM MM 2022) with SwinIR blocks (Liang et al., ICCVW 2021), the
fusion follows CodeFormer (Zhou et al., NeurIPS 2022). Names follow the reference checkpoints.

Estimator (``DualBlockSwinVqEstimator``)::

    feat (in_ch, H/8) -> first_block: conv3x3 -> [Upsample] -> ResBlock x2 -> conv3x3 (main_ch)
        |-> embed_projection (1x1) -> latent estimate (embed_dim)           [proj_pos before_rstb]
        '-> RSTB x num_swin_blocks (padded to the window) -> out_block: ResBlock -> conv3x3
            -> logits (n_embed, H/8)

Fusion (``VqDecFusionModule``): the VQGAN decoder runs with a feature hook; after the blocks of
up-level i (before its upsample) the feature keyed ``block_1_{2**i}`` is fused::

    h <- h + w * (h * scale([c ; h]) + shift([c ; h]))
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

from torch import Tensor, nn

from src.models.layers import RSTB, FuseSftBlock, PreActResBlock, pad_to_window
from src.utils.registry import SUBNETS


@SUBNETS.register()
class DualBlockSwinVqEstimator(nn.Module):
    def __init__(self, input_resolution: Sequence[int] = (32, 32), in_ch: int = 192,
                 main_ch: int = 128, n_embed: int = 256, embed_dim: int = 4, blk_depth: int = 3,
                 num_heads: int = 8, window_size: int = 8, num_swin_blocks: int = 3,
                 act_type: str = "silu", norm_type: str = "gn", use_upsample: bool = False,
                 rstb_kwargs: Optional[dict] = None, proj_pos: str = "before_rstb"):
        super().__init__()
        if norm_type != "gn":
            raise ValueError(f"only norm_type='gn' is supported, got {norm_type!r}")
        if proj_pos not in ("before_rstb", "after_rstb"):
            raise ValueError(f"proj_pos must be 'before_rstb' or 'after_rstb', got {proj_pos!r}")
        self.window_size = window_size
        self.proj_pos = proj_pos
        self.first_block = nn.Sequential(
            nn.Conv2d(in_ch, main_ch, 3, padding=1),
            nn.Upsample(scale_factor=2) if use_upsample else nn.Identity(),
            PreActResBlock(main_ch, act_type),
            PreActResBlock(main_ch, act_type),
            nn.Conv2d(main_ch, main_ch, 3, padding=1),
        )
        self.embed_projection = nn.Conv2d(main_ch, embed_dim, 1)
        self.swin_blks = nn.ModuleList([
            RSTB(main_ch, tuple(input_resolution), blk_depth, num_heads, window_size,
                 **(rstb_kwargs or {}))
            for _ in range(num_swin_blocks)])
        self.out_block = nn.Sequential(PreActResBlock(main_ch, act_type),
                                       nn.Conv2d(main_ch, n_embed, 3, padding=1))

    def _swin(self, x: Tensor) -> Tensor:
        for blk in self.swin_blks:
            x = blk(x)
        return x

    def forward(self, feat: Tensor) -> Tuple[Tensor, Tensor]:
        """feat (B, in_ch, h, w) -> (latent estimate (B, embed_dim, h, w), logits (B, n_embed, h, w))."""
        x = self.first_block(feat)
        latent = self.embed_projection(x) if self.proj_pos == "before_rstb" else None
        x = pad_to_window(self._swin, x, self.window_size)
        if latent is None:
            latent = self.embed_projection(x)
        return latent, self.out_block(x)


@SUBNETS.register()
class VqDecFusionModule(nn.Module):
    """SFT fusion blocks keyed ``block_1_{8,4,2,1}`` (the up-level's scale)."""

    def __init__(self, fuse_scedule_dict: Optional[Dict[str, dict]] = None, fuse_type: str = "sft",
                 weight_init: bool = False, weight_init_std: float = 0.02,
                 fuse_schedule_dict: Optional[Dict[str, dict]] = None):
        super().__init__()
        schedule = fuse_schedule_dict or fuse_scedule_dict  # the reference spells it 'scedule'
        if not schedule:
            raise ValueError("VqDecFusionModule needs a fuse_scedule_dict "
                             "{block_1_N: {cond_ch, dec_ch, mid_ch}}")
        if fuse_type != "sft":
            raise ValueError(f"only fuse_type='sft' is supported, got {fuse_type!r}")
        self.fusion_modules = nn.ModuleDict()
        for key, v in schedule.items():
            if not (key.startswith("block_1_") and key[8:].isdigit()):
                raise ValueError(f"fusion key {key!r} must be block_1_<scale> "
                                 "(before_mid/after_mid are not supported)")
            mid = v.get("mid_ch", v["dec_ch"])
            self.fusion_modules[key] = FuseSftBlock(v["cond_ch"], v["dec_ch"], mid)
        if weight_init:
            for m in self.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    nn.init.trunc_normal_(m.weight, std=weight_init_std)
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)

    def forward(self, z: Tensor, cond_feats: Dict[str, Tensor], vq_decoder: nn.Module,
                w: float = 1.0) -> Tensor:
        """z: post_quant_conv output; ``vq_decoder(z, feature_hook=...)`` gives the image."""
        def hook(i_level: int, h: Tensor) -> Tensor:
            key = f"block_1_{2 ** i_level}"
            if key in self.fusion_modules:
                h = self.fusion_modules[key](h, cond_feats[key], w)
            return h

        return vq_decoder(z, feature_hook=hook)
