"""Strip-wise inference (src/models/layers/lean.py) gives the whole-map layers' results.

Each module is run once with autograd (the whole-map path) and then without, at the default strip
size, at 300 elements (several rows per strip) and at 1 (one row per strip: every halo is used).
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from src.models.layers import lean
from src.models.layers.fusion import FuseSftBlock, GNResBlock
from src.models.vq.backbone import AttnBlock, Decoder, Downsample, Encoder, ResnetBlock, Upsample

STRIPS = (lean.STRIP_ELEMENTS, 300, 1)


def _check(module: nn.Module, *args, atol: float = 2e-6) -> None:
    module.eval()
    reference = module(*args)
    assert reference.requires_grad  # the whole-map path, with autograd
    for elements in STRIPS:
        lean.STRIP_ELEMENTS = elements
        try:
            with torch.no_grad():
                out = module(*args)
        finally:
            lean.STRIP_ELEMENTS = STRIPS[0]
        assert out.shape == reference.shape
        assert torch.allclose(out, reference, atol=atol, rtol=0), (type(module).__name__, elements)


@pytest.fixture(autouse=True)
def seeded():
    torch.manual_seed(0)


@pytest.mark.parametrize("widths", [(64, 32), (64, 64)])
def test_resnet_blocks(widths):
    _check(ResnetBlock(*widths), torch.randn(2, widths[0], 13, 10))
    _check(GNResBlock(*widths), torch.randn(2, widths[0], 11, 9))


@pytest.mark.parametrize("size", [(14, 10), (13, 11), (2, 3)])
def test_resampling(size):
    _check(Upsample(32), torch.randn(2, 32, *size))
    _check(Downsample(32), torch.randn(2, 32, *size))


def test_attention_in_query_chunks():
    _check(AttnBlock(32), torch.randn(1, 32, 40, 30))  # 1200 queries: two chunks


def test_sft_fusion():
    _check(FuseSftBlock(32, 64, 64), torch.randn(2, 64, 11, 9), torch.randn(2, 32, 11, 9), 0.7)


def test_whole_vqgan_encoder_and_decoder():
    kw = dict(ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(16,), resolution=32, z_channels=8)
    _check(Encoder(in_channels=3, **kw), torch.randn(1, 3, 36, 28), atol=1e-5)
    _check(Decoder(out_ch=3, **kw), torch.randn(1, 8, 18, 14), atol=1e-5)


def test_in_place_equals_a_new_map():
    norm, conv = nn.GroupNorm(8, 16), nn.Conv2d(16, 16, 3, padding=1)
    x = torch.randn(2, 16, 9, 7)
    with torch.no_grad():
        expected = conv(nn.functional.silu(norm(x)))
        lean.STRIP_ELEMENTS = 2 * 16 * 7 * 2  # two rows per strip
        try:
            fresh = lean.norm_silu_conv(x, norm, conv)
            same = lean.norm_silu_conv(x.clone(), norm, conv, inplace=True)
        finally:
            lean.STRIP_ELEMENTS = STRIPS[0]
    assert torch.allclose(fresh, expected, atol=1e-6) and torch.allclose(same, expected, atol=1e-6)
    with torch.no_grad():  # a non-contiguous input
        strided = torch.randn(2, 16, 9, 14)[..., ::2]
        assert torch.allclose(lean.norm_silu_conv(strided, norm, conv), conv(nn.functional.silu(norm(strided))),
                              atol=1e-6)
    with pytest.raises(ValueError, match="equal widths"):
        lean.norm_silu_conv(x, norm, nn.Conv2d(16, 8, 3, padding=1), inplace=True)


def test_training_keeps_the_whole_map_path():
    block = ResnetBlock(32, 32, dropout=0.5).train()
    assert not lean.lean_enabled(block)  # autograd on
    with torch.no_grad():
        assert not lean.lean_enabled(block)  # active dropout: masks must match the whole-map path
        assert lean.lean_enabled(block.eval())
    x = torch.randn(1, 32, 8, 8, requires_grad=True)
    block(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_rows_outside_the_held_part_are_refused():
    conv = nn.Conv2d(4, 4, 3, padding=1)
    with pytest.raises(ValueError, match="not all in the 3 rows held from 2"):
        lean.conv_rows(torch.zeros(1, 4, 3, 5), 2, 10, conv, 2, 4)  # needs row 1
