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


# -- the beta-conditioned discriminator of DC-VIC step 1-3 ------------------------------------------------------
from src.models.discriminators import DualBetaPatchGANDiscriminator  # noqa: E402

# The reference's DualBetaCondTamingNLayerDiscriminator (input_nc 11, ndf 64, n_layers 3, norm_type none,
# L 10, cond_ch 8, include_x): its state-dict keys and shapes, as its trainer saves them under "discriminator".
REFERENCE_KEYS = {
    "main.0.weight": (64, 11, 4, 4), "main.0.bias": (64,),
    "main.2.weight": (128, 64, 4, 4), "main.2.bias": (128,),
    "main.5.weight": (256, 128, 4, 4), "main.5.bias": (256,),
    "main.8.weight": (512, 256, 4, 4), "main.8.bias": (512,),
    "main.11.weight": (1, 512, 4, 4), "main.11.bias": (1,),
    "mlp.0.weight": (8, 42), "mlp.0.bias": (8,), "mlp.2.weight": (8, 8), "mlp.2.bias": (8,),
}
REFERENCE_ARGS = {"type": "DualBetaCondTamingNLayerDiscriminator", "input_nc": 11, "n_layers": 3, "ndf": 64,
                  "use_actnorm": False, "weight_init": True, "L": 10, "cond_ch": 8, "use_pi": False,
                  "include_x": True, "max_beta_1": 3.0, "max_beta_2": 3.5, "norm_type": "none"}


def test_reference_config_builds_and_a_reference_state_dict_loads_strictly():
    d = SUBNETS.build(REFERENCE_ARGS)  # the discriminator section of the reference's config, verbatim
    assert isinstance(d, DualBetaPatchGANDiscriminator)
    assert _shapes(d) == REFERENCE_KEYS
    torch.manual_seed(1)
    foreign = {k: torch.randn(shape) for k, shape in REFERENCE_KEYS.items()}
    d.load_state_dict(foreign, strict=True)
    assert torch.equal(d.mlp[0].weight, foreign["mlp.0.weight"])


def test_oasis_variant_has_reference_shapes_and_logits_on_the_vq_grid():
    d = SUBNETS.build({**REFERENCE_ARGS, "out_nc": 257, "keep_shape": True})
    shapes = _shapes(d)
    assert shapes["main.8.weight"] == (512, 256, 3, 3) and shapes["main.11.weight"] == (257, 512, 3, 3)
    with torch.no_grad():
        out = d(torch.zeros(2, 3, 256, 192), torch.tensor([0.0, 3.0]), torch.tensor([3.5, 0.0]))
    assert out.shape == (2, 257, 32, 24)


def test_condition_is_the_learned_mlp_of_fourier_features():
    from src.models.layers.conditioning import FourierEncoding

    torch.manual_seed(0)
    d = DualBetaPatchGANDiscriminator(ndf=8, norm="none").eval()
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    br, bv = torch.tensor([0.3, 2.7]), torch.tensor([3.5, 1.0])
    feats = torch.cat([FourierEncoding(10, 3.0)(br), FourierEncoding(10, 3.5)(bv)], dim=1)
    assert feats.shape == (2, 42)
    cond = d.mlp(feats)[:, :, None, None].expand(-1, -1, 64, 64)
    with torch.no_grad():
        expected = d.main(torch.cat([x, cond], dim=1))
        got = d(x, br, bv)
    assert torch.equal(got, expected)
    # the betas change the output, per sample
    with torch.no_grad():
        swapped = d(x, br.flip(0), bv.flip(0))
    assert not torch.allclose(got[0], swapped[0]) and not torch.allclose(got[1], swapped[1])


def test_mlp_is_learned_and_betas_are_checked():
    d = DualBetaPatchGANDiscriminator(ndf=8, norm="none")
    d(torch.zeros(1, 3, 32, 32), 1.0, 2.0).mean().backward()
    assert d.mlp[0].weight.grad is not None and d.mlp[0].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match=r"\[0, 3.0\]"):
        d(torch.zeros(1, 3, 32, 32), 3.5, 1.0)
    with pytest.raises(ValueError, match="needs beta_rate and beta_vq"):
        d(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="input_nc must be"):
        DualBetaPatchGANDiscriminator(input_nc=3)
    with pytest.raises(ValueError, match="not both"):
        DualBetaPatchGANDiscriminator(norm="none", norm_type="none")
