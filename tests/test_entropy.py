"""Entropy models of DC-VIC: STE rounding, CompressAI-backed bottleneck / Gaussian, hyperprior,
ChARM context model (shapes, support slices, LRP, bit-exact compress/decompress)."""
import pytest
import torch
from compressai.entropy_models import GaussianConditional
from compressai.models.base import get_scale_table

from src.models.entropy import (Minnen20CharmContextModel, Minnen20HyperDecoder,
                                Minnen20HyperEncoder, SteEntropyBottleneck,
                                SteGaussianMeanScaleConditional, ste_round)
from src.models.entropy.exact import on_grid
from src.utils.registry import SUBNETS


def test_ste_round_forward_and_gradient():
    x = torch.tensor([-1.6, -0.4, 0.5, 1.49, 2.51], requires_grad=True)
    y = ste_round(x)
    assert torch.equal(y, torch.round(x.detach()))
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))


def test_ste_entropy_bottleneck_train_and_eval():
    torch.manual_seed(0)
    eb = SteEntropyBottleneck(8)
    with torch.no_grad():
        eb.quantiles[:, 0, 1] = torch.linspace(-0.3, 0.4, 8)  # non-zero medians
    z = (torch.randn(2, 8, 4, 4) * 3).requires_grad_(True)
    z_hat, lik = eb(z, training=True)
    mu = eb.medians()
    assert torch.allclose(z_hat, torch.round(z - mu) + mu)
    assert (lik > 0).all() and (lik <= 1).all() and lik.requires_grad
    z_hat.sum().backward()
    assert torch.equal(z.grad, torch.ones_like(z))  # straight through
    z_eval, lik_eval = eb(z.detach(), training=False)
    assert torch.equal(z_eval, torch.round(z.detach() - mu) + mu)
    # compressai's coder reproduces the eval values exactly
    eb.update(force=True)
    strings = eb.compress(z.detach())
    assert torch.equal(eb.decompress(strings, z.shape[-2:]), z_eval)
    assert eb.loss().ndim == 0


def test_ste_gaussian_conditional_matches_compressai():
    torch.manual_seed(1)
    gc = SteGaussianMeanScaleConditional(scale_bound=0.11)
    ref = GaussianConditional(None, scale_bound=0.11)
    y = (torch.randn(2, 6, 4, 4) * 4).requires_grad_(True)
    means, scales = torch.randn(2, 6, 4, 4), torch.rand(2, 6, 4, 4) * 3
    params = torch.cat([means, scales], 1)
    y_hat, lik = gc(y, params, training=True)
    assert torch.allclose(y_hat, torch.round(y - means) + means)
    y_hat.sum().backward()
    assert torch.equal(y.grad, torch.ones_like(y))
    y_eval, lik_eval = gc(y.detach(), params, training=False)
    y_ref, lik_ref = ref(y.detach(), scales, means=means, training=False)
    assert torch.equal(y_eval, y_ref) and torch.equal(lik_eval, lik_ref)
    assert (lik > 0).all() and (lik <= 1).all()


def test_hyperprior_shapes_and_reference_sizes():
    ha = Minnen20HyperEncoder(bottleneck_y=192, bottleneck_z=192)
    hs = Minnen20HyperDecoder(bottleneck_z=192, hyper_out_ch=256)
    assert ha.conv1.weight.shape == (320, 192, 3, 3) and ha.conv2.weight.shape == (256, 320, 5, 5)
    assert hs.hd_mu.conv1.weight.shape == (192, 192, 5, 5)  # ConvTranspose: (in, out, k, k)
    assert hs.hd_mu.conv3.weight.shape == (256, 128, 3, 3)
    small_a = Minnen20HyperEncoder(48, 16, hidden_chs=(16, 16))
    small_s = Minnen20HyperDecoder(16, 32, hidden_chs=(16, 16))
    z = small_a(torch.randn(1, 48, 8, 12))
    assert z.shape == (1, 16, 2, 3)
    assert small_s(z).shape == (1, 32, 8, 12)
    with pytest.raises(ValueError):
        Minnen20HyperDecoder(16, 33)


def test_charm_support_slices_and_channels():
    cm = Minnen20CharmContextModel(num_slices=6, bottleneck_y=192, hyper_out_ch=256,
                                   max_support_slices=4)
    in_ch = [t.model[0].in_channels for t in cm.mean_slice_transforms]
    assert in_ch == [128, 160, 192, 224, 256, 256]  # at most 4 support slices of 32
    assert [t.model[0].in_channels for t in cm.lrp_slice_transforms] == [c + 32 for c in in_ch]
    cm_all = Minnen20CharmContextModel(6, 192, 256, max_support_slices=-1, hidden_chs=(8, 8))
    assert cm_all.scale_slice_transforms[5].model[0].in_channels == 128 + 5 * 32
    with pytest.raises(ValueError):
        Minnen20CharmContextModel(5, 192, 256)


def _small_charm(seed=0):
    torch.manual_seed(seed)
    cm = SUBNETS.build({"type": "Minnen20CharmContextModel", "num_slices": 6, "bottleneck_y": 24,
                        "hyper_out_ch": 16, "max_support_slices": 4, "hidden_chs": [16, 16]})
    gc = SUBNETS.build({"type": "SteGaussianMeanScaleConditional", "scale_bound": 0.11})
    return cm.eval(), gc.eval()


def test_charm_forward_lrp_and_likelihoods():
    cm, gc = _small_charm()
    y = torch.randn(2, 24, 6, 5) * 3
    hyper = torch.randn(2, 16, 6, 5)
    y_hat, lik, q_lik = cm(y, hyper, gc, training=True, calc_q_likelihood=True)
    assert y_hat.shape == y.shape and lik.shape == y.shape and q_lik.shape == y.shape
    assert (lik > 0).all() and (lik <= 1).all() and (q_lik > 0).all()
    y_hat_e, lik_e, none = cm(y, hyper, gc, training=False)
    assert none is None
    # every decoded value is a rounded residual around its mean plus an LRP term within 0.5
    decoded = []
    for i, y_i in enumerate(y.chunk(6, 1)):
        _, mu, _ = cm._params(i, hyper, decoded)
        q = torch.round(y_i - mu) + mu
        decoded.append(y_hat_e[:, 4 * i:4 * i + 4])
        assert (decoded[-1] - q).abs().max() <= 0.5


def test_charm_compress_decompress_bit_exact():
    """One coding pass for both sides: the sender writes round(y - mu), the receiver reads the
    string back through the same pass and gets the sender's y_hat bit for bit."""
    from src.models.codec.symbols import SymbolReader, SymbolWriter

    cm, gc = _small_charm(1)
    gc.update_scale_table(get_scale_table(), force=True)
    y = torch.randn(2, 24, 4, 7) * 5
    hyper = on_grid(torch.randn(2, 16, 4, 7))
    slices = y.double().chunk(6, 1)
    writers = [SymbolWriter(), SymbolWriter()]

    def write(i, indexes, mu):
        symbols = torch.round(slices[i] - mu).int()
        for b, w in enumerate(writers):
            w.write("y", gc, symbols[b], indexes[b])
        return symbols

    with torch.no_grad():
        y_hat_fwd, lik, _ = cm(y, hyper.float(), gc, training=False)
        y_hat_enc = cm.code(hyper, gc, write)
        strings = [w.flush() for w in writers]
        readers = [SymbolReader(s) for s in strings]
        y_hat_dec = cm.code(hyper, gc, lambda i, idx, mu: torch.stack([r.read(gc, idx[b])
                                                                        for b, r in enumerate(readers)]))
    for r in readers:
        r.finish()
    assert y_hat_enc.dtype == torch.float64 and torch.equal(y_hat_dec, y_hat_enc)
    # the float32 forward (rate estimates, training) agrees to float noise: grid 2**-16
    assert (y_hat_enc - y_hat_fwd).abs().max() < 1e-3
    bits = sum(len(s) for s in strings) * 8
    est = float(-torch.log2(lik).sum())
    assert abs(bits - est) < 0.2 * est + 2 * 64
