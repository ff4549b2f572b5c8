"""Building blocks of the DC-VIC networks: ELIC blocks and attention, dual-beta conditioning,
Swin/RSTB blocks and SFT fusion."""
from .conditioning import (BetaScaleShift, FourierEncoding, as_beta_tensor, beta_mlp,
                           dual_beta_condition, normalise)
from .elic import (AttentionResUnit, BottleneckBlock, ResidualBottleneckBlocks,
                   SimplifiedAttention, down_conv, up_conv)
from .fusion import FuseSftBlock, GNResBlock, PreActResBlock, group_norm32
from .swin import RSTB, SwinLayer, SwinTransformerBlock, WindowAttention, pad_to_window

__all__ = [
    "BetaScaleShift", "FourierEncoding", "as_beta_tensor", "beta_mlp", "dual_beta_condition", "normalise",
    "AttentionResUnit", "BottleneckBlock", "ResidualBottleneckBlocks", "SimplifiedAttention",
    "down_conv", "up_conv", "FuseSftBlock", "GNResBlock", "PreActResBlock", "group_norm32",
    "RSTB", "SwinLayer", "SwinTransformerBlock", "WindowAttention", "pad_to_window",
]
