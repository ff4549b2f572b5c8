"""BetaSpace: the model's one description of its betas (maxima, grid, selected pairs)."""
import warnings

import pytest
import torch

from src.models.codec.betas import PUBLISHED_MAX_RATE, PUBLISHED_MAX_VQ, BetaSpace, as_float32
from src.models.layers.conditioning import FourierEncoding, as_beta_tensor
from src.trainer.dcvic_trainers import discriminator_config


def test_from_config_reads_maxima_levels_and_pairs():
    space = BetaSpace.from_config({"num_beta_levels": 4, "selected_beta_rate": [0.5, 2.0],
                                   "selected_beta_vq": [1.0, 3.0]},
                                  {"encoder": {"max_beta_1": 2.0, "max_beta_2": None}, "decoder": {"max_beta_1": 2.0}})
    assert space.maxima == (2.0, PUBLISHED_MAX_VQ) and space.levels == 4
    assert space.selected == ((0.5, 1.0), (2.0, 3.0))
    assert space.grid(2.0).tolist() == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert BetaSpace.from_config({}).maxima == (PUBLISHED_MAX_RATE, PUBLISHED_MAX_VQ) == (3.0, 3.5)


@pytest.mark.parametrize("model_cfg, subnet, match", [
    ({"selected_beta_rate": [1.0], "selected_beta_vq": []}, None, "equal lengths"),
    ({"num_beta_levels": 0}, None, "at least 1 interval"),
    ({"selected_beta_rate": [3.2], "selected_beta_vq": [1.0]}, None, "outside"),
    ({}, {"encoder": {"max_beta_1": 3.0}, "decoder": {"max_beta_1": 2.0}}, "differ"),
    ({}, {"encoder": {"max_beta_2": -1.0}}, "positive"),
])
def test_bad_configs_are_refused(model_cfg, subnet, match):
    with pytest.raises(ValueError, match=match):
        BetaSpace.from_config(model_cfg, subnet)


def test_quality_pairs_interpolate_and_round_trip_as_float32():
    space = BetaSpace(selected=((2.29, 1.0), (1.12, 2.0), (0.16, 3.0)))
    assert space.pair(1) == (1.12, 2.0)
    r, v = space.pair(0.5)
    assert r == pytest.approx((2.29 + 1.12) / 2) and v == pytest.approx(1.5)
    assert space.quality_of(1.12, 2.0) == 1 and space.quality_of(as_float32(1.12), as_float32(2.0)) == 1
    assert space.quality_of(1.13, 2.0) is None
    with pytest.raises(ValueError, match=r"\[0, 2\]"):
        space.pair(2.5)
    with pytest.raises(ValueError, match="--beta_rate"):
        BetaSpace().pair(0)


def test_sampling_draws_grid_values_or_selected_pairs():
    space = BetaSpace(2.0, 4.0, levels=8, selected=((0.5, 1.0), (1.5, 3.0)))
    torch.manual_seed(0)
    rate, vq = space.sample(1000, per_sample=True, device="cpu")
    assert set(rate.tolist()) == set(space.grid(2.0).tolist()) and set(vq.tolist()) == set(space.grid(4.0).tolist())
    rate, vq = space.sample(6, per_sample=False, device="cpu")
    assert rate.unique().numel() == 1 and vq.unique().numel() == 1
    rate, vq = space.sample(500, per_sample=True, device="cpu", use_selected=True)
    assert set(zip(rate.tolist(), vq.tolist())) == {(0.5, 1.0), (1.5, 3.0)}
    assert [p[:2] for p in space.validation_points()] == [(2.0, 0.0), (2.0, 4.0), (0.0, 0.0), (0.0, 4.0)]
    assert [p[2] for p in space.validation_points(use_selected=True)] == ["_pair0", "_pair1"]


def test_beta_tensors_and_normalisation():
    space = BetaSpace(3.0, 3.5)
    br, bv = space.tensors(1.5, torch.tensor([0.0, 3.5], dtype=torch.float64), batch=2)
    assert br.dtype == bv.dtype == torch.float32 and br.tolist() == [1.5, 1.5] and bv.tolist() == [0.0, 3.5]
    nr, nv = space.normalise(br, bv)
    assert nr.tolist() == [0.0, 0.0] and nv.tolist() == [-1.0, 1.0]
    with pytest.raises(ValueError, match=r"\(3,\) tensor"):
        as_beta_tensor(torch.ones(2), 3, "beta_rate")
    with pytest.raises(ValueError, match="lie in"):
        FourierEncoding(2, 3.0)(torch.tensor([3.2]))


def test_the_model_owns_its_space_and_the_discriminator_follows_it():
    from src.models.codec.loading import build_codec
    from src.utils.config import Config
    from tests.test_golden_streams import tiny_subnet

    sub = tiny_subnet()
    for name in ("encoder", "decoder"):
        sub[name].update(max_beta_1=2.0, max_beta_2=None)
    cfg = Config({"model": {"type": "HyperpriorCharmDualCondVicModel", "num_beta_levels": 10,
                            "selected_beta_rate": [1.0], "selected_beta_vq": [2.0]}, "subnet": sub})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_codec(cfg)
    assert model.beta_space == BetaSpace(2.0, 3.5, 10, ((1.0, 2.0),))
    assert model.encoder.embed_1.max_beta == model.decoder.embed_1.max_beta == 2.0
    assert model.decoder.embed_2.max_beta == 3.5
    disc = discriminator_config({"type": "DualBetaPatchGANDiscriminator"}, model.beta_space)
    assert (disc["max_beta_1"], disc["max_beta_2"]) == (2.0, 3.5)
    with pytest.raises(ValueError, match="beta range"):
        discriminator_config({"max_beta_1": 3.0}, model.beta_space)
