"""PatchGAN: taming-compatible parameter names, output size, init, norm options."""
import pytest
import torch

from src.models.discriminators import PatchGANDiscriminator
from src.utils.registry import SUBNETS

taming_disc = pytest.importorskip("taming.modules.discriminator.model")


def _shapes(module):
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


@pytest.mark.parametrize("use_actnorm", [False, True])
def test_names_and_shapes_match_taming(use_actnorm):
    ref = taming_disc.NLayerDiscriminator(input_nc=11, ndf=64, n_layers=3, use_actnorm=use_actnorm)
    ours = PatchGANDiscriminator(input_nc=11, ndf=64, n_layers=3, use_actnorm=use_actnorm)
    assert _shapes(ours) == _shapes(ref)
    ours.load_state_dict(ref.state_dict(), strict=True)
    if not use_actnorm:  # same weights, same function (BatchNorm in eval mode)
        ref.eval(), ours.eval()
        x = torch.randn(1, 11, 64, 64)
        with torch.no_grad():
            assert torch.allclose(ours(x), ref(x), atol=1e-5)


def test_output_shape_256_with_beta_channels():
    d = SUBNETS.build({"type": "PatchGANDiscriminator", "input_nc": 11, "norm": "none"})
    with torch.no_grad():
        out = d(torch.randn(1, 11, 256, 256))
    assert out.shape == (1, 1, 30, 30)


def test_norm_none_keeps_indices_and_adds_biases():
    d = PatchGANDiscriminator(input_nc=3, norm="none")
    keys = set(d.state_dict())
    assert keys == {f"main.{i}.{p}" for i in (0, 2, 5, 8, 11) for p in ("weight", "bias")}
    assert isinstance(d.main[3], torch.nn.Identity)


def test_init_and_actnorm_data_init():
    torch.manual_seed(0)
    d = PatchGANDiscriminator(input_nc=3, norm="batch")
    w = d.main[5].weight
    assert abs(w.mean().item()) < 2e-3 and abs(w.std().item() - 0.02) < 2e-3
    assert torch.all(d.main[3].bias == 0)
    a = PatchGANDiscriminator(input_nc=3, ndf=8, norm="actnorm").train()
    x = torch.randn(4, 3, 32, 32)
    a(x)
    assert a.main[3].initialized.item() == 1
    h = a.main[2](a.main[1](a.main[0](x)))
    y = a.main[3](h)
    assert torch.allclose(y.mean((0, 2, 3)), torch.zeros(16), atol=1e-4)
    with pytest.raises(ValueError, match="batch, actnorm, none"):
        PatchGANDiscriminator(norm="instance")
