"""DC-VIC model: shapes, rates, bit-exact round trip, state dicts, beta wiring, reference keys.

Tiny widths (codec 32 channels, VQGAN ch 32) keep the file well under a minute on 2 CPU cores;
the full-size model is only built (on the meta device) to check its state-dict keys.
"""
import warnings

import pytest
import torch

from src.models.codec.dcvic import DCVIC, build_dcvic_from_config
from src.models.entropy.rate import bits_per_pixel
from src.models.layers import FourierEncoding, RSTB, pad_to_window
from src.models.layers.swin import shifted_window_mask
from src.utils.registry import MODELS

FUSION_LAYERS = dict(block1="block_1_8", block2="block_1_4", block3="block_1_2")


def tiny_subnet(main_ch: int = 32, beta_cond: bool = True) -> dict:
    """The reference subnet section with narrow widths (GroupNorm needs multiples of 32)."""
    betas = dict(max_beta_1=3.0, max_beta_2=3.5, include_x=True, cond_ch=32, L=10, use_pi=False)
    enc = dict(type="ElicDualBetaFtVqScEncoder" if beta_cond else "ElicVqCatScEncoder", in_ch=3,
               out_ch=main_ch, main_ch=main_ch, block_mid_ch=16, input_feat_ch=260, proj_init=False)
    dec = dict(_delete_=True,
               type="ElicDualBetaFtFeatFusionDecoder" if beta_cond else "ElicFeatFusionDecoder",
               in_ch=main_ch, out_ch=3, main_ch=main_ch, block_mid_ch=16, use_tanh=False,
               feat_layer_name="block1", fusion_layer_dict=FUSION_LAYERS)
    if beta_cond:
        enc.update(betas)
        dec.update(betas)
    return {
        "_delete_": True, "encoder": enc, "decoder": dec,
        "hyperencoder": dict(type="Minnen20HyperEncoder", bottleneck_y=main_ch, bottleneck_z=32,
                             hidden_chs=[32, 32]),
        "hyperdecoder": dict(type="Minnen20HyperDecoder", bottleneck_z=32, hyper_out_ch=64,
                             hidden_chs=[32, 32]),
        "context_model": dict(type="Minnen20CharmContextModel", num_slices=4, bottleneck_y=main_ch,
                              hyper_out_ch=64, max_support_slices=2, hidden_chs=[32, 32]),
        "entropy_model_z": dict(type="SteEntropyBottleneck", channels=32),
        "entropy_model_y": dict(type="SteGaussianMeanScaleConditional", scale_bound=0.11),
        "fusion_module": dict(fuse_type="sft", fuse_scedule_dict=dict(
            block_1_8=dict(dec_ch=128, cond_ch=main_ch, mid_ch=128),
            block_1_4=dict(dec_ch=64, cond_ch=main_ch, mid_ch=64),
            block_1_2=dict(dec_ch=64, cond_ch=main_ch, mid_ch=64))),
        "vq_estimator": dict(type="DualBlockSwinVqEstimator", input_resolution=[16, 16],
                             in_ch=main_ch, main_ch=32, n_embed=256, embed_dim=4,
                             num_swin_blocks=2, blk_depth=2, use_upsample=False),
        "vq_model": dict(ckpt_path=None, embed_dim=4, n_embed=256, monitor="val/rec_loss",
                         ddconfig=dict(double_z=False, z_channels=4, resolution=128, in_channels=3,
                                       out_ch=3, ch=32, ch_mult=[1, 2, 2, 4], num_res_blocks=1,
                                       attn_resolutions=[], dropout=0.0),
                         lossconfig={"target": "torch.nn.Identity"}),
    }


def reference_subnet() -> dict:
    """``config/_base_/model/hyperprior_charm_dual_cond_vic_model_vq_f8_n256.yaml`` (+ betas)."""
    betas = dict(max_beta_1=3.0, max_beta_2=3.5, include_x=True, cond_ch=128, L=10, use_pi=False)
    return {
        "encoder": dict(type="ElicDualBetaFtVqScEncoder", in_ch=3, out_ch=192, main_ch=192,
                        block_mid_ch=96, input_feat_ch=260, proj_init=False, **betas),
        "decoder": dict(type="ElicDualBetaFtFeatFusionDecoder", block_mid_ch=96, in_ch=192, out_ch=3,
                        main_ch=192, use_tanh=False, feat_layer_name="block1",
                        fusion_layer_dict=FUSION_LAYERS, **betas),
        "hyperencoder": dict(type="Minnen20HyperEncoder", bottleneck_y=192, bottleneck_z=192),
        "hyperdecoder": dict(type="Minnen20HyperDecoder", bottleneck_z=192, hyper_out_ch=256),
        "context_model": dict(type="Minnen20CharmContextModel", num_slices=6, bottleneck_y=192,
                              hyper_out_ch=256, max_support_slices=4),
        "entropy_model_z": dict(type="SteEntropyBottleneck", channels=192),
        "entropy_model_y": dict(type="SteGaussianMeanScaleConditional", scale_bound=0.11),
        "fusion_module": dict(fuse_type="sft", fuse_scedule_dict=dict(
            block_1_8=dict(dec_ch=512, cond_ch=192, mid_ch=512),
            block_1_4=dict(dec_ch=256, cond_ch=192, mid_ch=256),
            block_1_2=dict(dec_ch=256, cond_ch=192, mid_ch=256))),
        "vq_estimator": dict(type="DualBlockSwinVqEstimator", input_resolution=[32, 32], in_ch=192,
                             main_ch=128, n_embed=256, embed_dim=4, num_swin_blocks=3, blk_depth=3,
                             use_upsample=False),
        "vq_model": dict(ckpt_path=None, embed_dim=4, n_embed=256, monitor="val/rec_loss",
                         ddconfig=dict(double_z=False, z_channels=4, resolution=256, in_channels=3,
                                       out_ch=3, ch=128, ch_mult=[1, 2, 2, 4], num_res_blocks=2,
                                       attn_resolutions=[32], dropout=0.0),
                         lossconfig={"target": "torch.nn.Identity"}),
    }


def build(seed: int = 0, beta_cond: bool = True) -> DCVIC:
    torch.manual_seed(seed)
    mtype = "HyperpriorCharmDualCondVicModel" if beta_cond else "HyperpriorCharmVicModel"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random VQGAN warning
        return build_dcvic_from_config({"type": mtype, "enc_vq_input": "onehot_indices"},
                                       tiny_subnet(beta_cond=beta_cond))


@pytest.fixture(scope="module")
def model():
    return build(0)


def test_forward_shapes_rates_and_gradients(model):
    torch.manual_seed(1)
    x = torch.rand(2, 3, 64, 128) * 2 - 1
    model.train()
    out = model(x, beta_rate=torch.tensor([0.5, 2.0]), beta_vq=torch.tensor([3.5, 0.0]))
    assert out["x_hat"].shape == x.shape
    assert out["vq_logits"].shape == (2, 256, 8, 16)
    assert out["vq_latent_hat"].shape == (2, 4, 8, 16)
    assert out["vq_indices"].shape == (2, 8, 16) and out["vq_indices"].dtype == torch.long
    assert out["y_hat"].shape == (2, 32, 4, 8) and out["z_hat"].shape == (2, 32, 1, 2)
    for key in ("y", "z"):
        lik = out["likelihoods"][key]
        assert lik.shape == out[f"{key}_hat"].shape
        assert (lik > 0).all() and (lik <= 1).all()
        assert (out["q_likelihoods"][key] > 0).all()
        assert torch.allclose(out[f"bpp_{key}"], -torch.log2(lik).sum((1, 2, 3)) / (64 * 128))
    assert out["bpp"].shape == (2,)
    assert torch.allclose(out["bpp"], out["bpp_y"] + out["bpp_z"])
    # STE: y_hat is rounded around the predicted means, yet gradients reach the encoder
    loss = out["x_hat"].square().mean() + out["bpp"].mean() + out["vq_logits"].logsumexp(1).mean()
    loss = loss + out["vq_latent_hat"].square().mean()
    loss.backward()
    assert model.encoder.conv1.weight.grad is not None
    assert model.decoder.block1.block0.conv[0].weight.grad is not None
    assert model.vq_estimator.first_block[0].weight.grad is not None
    assert model.fusion_module.fusion_modules["block_1_2"].shift[2].weight.grad is not None
    assert all(p.grad is None for p in model.vq_model.parameters())
    assert model.aux_loss().ndim == 0
    model.zero_grad(set_to_none=True)


def test_parameter_groups(model):
    main = dict(model.trainable_parameters())
    aux = dict(model.aux_parameters())
    assert list(aux) == ["entropy_model_z.quantiles"]
    assert not any(n.startswith("vq_model.") for n in main) and not set(main) & set(aux)
    assert all(not p.requires_grad for p in model.vq_model.parameters())
    assert any(k.startswith("vq_model.") for k in model.state_dict())  # as in the reference


def test_round_trip_bit_exact_on_cpu(photo):
    model = build(3).eval()
    model.update(force=True)
    x = photo  # astronaut 128x128 in [-1, 1]
    with torch.no_grad():
        ref = model(x, beta_rate=1.12, beta_vq=2.0)
        enc = model.compress(x, beta_rate=1.12, beta_vq=2.0)
        y_hat = model.decompress_latent(enc["strings"], enc["shape"])
        dec = model.decompress(enc["strings"], enc["shape"], beta_rate=1.12, beta_vq=2.0)
    # one group of strings, one string per sample: z and the 4 y slices in one rANS string
    assert len(enc["strings"]) == 1 and len(enc["strings"][0]) == 1 and enc["shape"] == (2, 2)
    assert isinstance(enc["strings"][0][0], bytes) and set(enc["ideal_bits"][0]) == {"z", "y"}
    assert torch.equal(y_hat, enc["y_hat"]) and torch.equal(dec["y_hat"], enc["y_hat"])
    # the receiver's image is the sender's (same machine): decode() of the sender's y_hat
    with torch.no_grad():
        sender = model.decode(enc["y_hat"], 1.12, 2.0)["x_hat"].clamp(-1, 1)
    assert torch.equal(dec["x_hat"], sender)
    # the float32 forward (the rate estimates) agrees to float noise
    assert (y_hat - ref["y_hat"]).abs().max() < 1e-3
    assert dec["x_hat"].abs().max() <= 1
    bits = sum(len(s[0]) for s in enc["strings"]) * 8
    est = float(ref["bpp"][0]) * 128 * 128
    assert abs(bits - est) < 0.25 * est + 64  # real rate near the estimate (+ the flushed state)
    assert sum(enc["ideal_bits"][0].values()) <= bits <= sum(enc["ideal_bits"][0].values()) + 64 + 32


def test_vq_indices_shortcut_matches(model):
    model.eval()
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        a = model(x, 1.0, 1.0)
        b = model(x, 1.0, 1.0, vq_indices=a["vq_indices"])
    assert torch.equal(a["y"], b["y"])


def test_state_dict_strict_reload():
    src = build(4).eval()
    src.update(force=True)
    dst = build(5).eval()  # different weights, CDF buffers still empty
    missing = dst.load_state_dict(src.state_dict(), strict=True)
    assert not missing.missing_keys and not missing.unexpected_keys
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.equal(src(x, 0.3, 0.7)["x_hat"], dst(x, 0.3, 0.7)["x_hat"])
        s = src.compress(x, 0.3, 0.7)
        assert s["strings"] == dst.compress(x, 0.3, 0.7)["strings"]


def test_beta_conditioning_is_wired(model):
    model.eval()
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        y0 = model.encode(x, 0.0, 1.0)["y"]
        y1 = model.encode(x, 3.0, 1.0)["y"]
        y2 = model.encode(x, 0.0, 3.5)["y"]
        f0 = model.decoder.get_feats(y0, 0.0, 1.0)[0]
        f1 = model.decoder.get_feats(y0, 0.0, 3.5)[0]
    assert not torch.allclose(y0, y1) and not torch.allclose(y0, y2)
    assert not torch.allclose(f0, f1)
    with pytest.raises(ValueError):
        model.encode(x, 3.5, 1.0)  # beta_rate beyond max_beta_1 = 3.0
    with pytest.raises(ValueError):
        model.encode(x, None, 1.0)


def test_unconditioned_step_1_1_model():
    m = build(6, beta_cond=False).eval()
    keys = m.state_dict().keys()
    coder_keys = [k for k in keys if k.startswith(("encoder.", "decoder."))]
    assert not any("beta_ft_list" in k or ".mlp." in k or "init_fuse" in k for k in coder_keys)
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        a, b = m(x)["x_hat"], m(x, 1.0, 2.0)["x_hat"]  # betas are ignored
    assert torch.equal(a, b)
    # step 1-2 loads step 1-1 non-strictly: every 1-1 key exists in the dual-beta model
    dual = build(7).state_dict()
    shared = [k for k in keys if k in dual and dual[k].shape == m.state_dict()[k].shape]
    assert len(shared) == len(keys)


def test_registry_and_config_errors():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = MODELS.build({"type": "HyperpriorCharmVicModel", "enc_vq_input": "onehot_indices",
                          "num_beta_levels": 100}, subnet=tiny_subnet(beta_cond=False))
    assert isinstance(m, DCVIC) and not m.beta_cond
    with pytest.raises(KeyError, match="HyperpriorCharmDualCondVicModel"):
        build_dcvic_from_config({"type": "Nope"}, tiny_subnet())
    sub = tiny_subnet()
    sub["encoder"]["max_beta_1"] = None  # null in the reference base config -> published 3.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = build_dcvic_from_config({"type": "HyperpriorCharmDualCondVicModel"}, sub)
    assert m.encoder.embed_1.max_beta == 3.0


def test_fourier_encoding_values():
    enc = FourierEncoding(L=10, max_beta=3.0, use_pi=False, include_x=True)
    f = enc(torch.tensor([0.0, 1.5, 3.0]))
    assert f.shape == (3, 21)
    assert torch.allclose(f[:, 0], torch.tensor([-1.0, 0.0, 1.0]))
    v = torch.tensor(1.0)
    assert torch.allclose(f[2, 1:11], torch.sin(v * 2.0 ** torch.arange(10)))
    assert torch.allclose(f[2, 11:], torch.cos(v * 2.0 ** torch.arange(10)))


def test_rstb_pads_and_handles_other_sizes():
    torch.manual_seed(0)
    blk = RSTB(32, (16, 16), depth=2, num_heads=8, window_size=8)
    assert blk.residual_group.blocks[1].attn_mask.shape == (4, 64, 64)
    assert torch.equal(blk.residual_group.blocks[1].attn_mask, shifted_window_mask(16, 16, 8, 4))
    x = torch.randn(1, 32, 12, 20)
    y = pad_to_window(blk, x, 8)
    assert y.shape == x.shape and torch.isfinite(y).all()
    assert blk(torch.randn(2, 32, 24, 32)).shape == (2, 32, 24, 32)  # runtime mask


def _param_count(sd, prefix):
    return sum(v.numel() for k, v in sd.items() if k.startswith(prefix) and v.is_floating_point())


def test_full_size_reference_keys():
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        m = build_dcvic_from_config({"type": "HyperpriorCharmDualCondVicModel",
                                     "enc_vq_input": "onehot_indices"}, reference_subnet())
    sd = m.state_dict()
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    assert len(sd) == 1073
    assert sum(k.startswith("vq_model.") for k in sd) == 299
    expected = {  # names and shapes read from the reference code
        "encoder.projection.weight": (192, 452, 3, 3),
        "encoder.beta_ft_list.8.shift.weight": (192, 128, 1, 1),
        "encoder.mlp.0.weight": (128, 42),
        "encoder.attn4.trunk_block.2.c2.weight": (96, 96, 3, 3),
        "encoder.block3.block2.conv.4.weight": (192, 96, 1, 1),
        "decoder.init_fuse.shared.0.weight": (128, 128, 1, 1),
        "decoder.conv4.weight": (192, 3, 5, 5),
        "hyperencoder.conv1.weight": (320, 192, 3, 3),
        "hyperdecoder.hd_std.conv3.weight": (256, 128, 3, 3),
        "context_model.mean_slice_transforms.5.model.0.weight": (224, 128 + 4 * 32, 5, 5),
        "context_model.lrp_slice_transforms.0.model.0.weight": (224, 128 + 32, 5, 5),
        "entropy_model_z.quantiles": (192, 1, 3),
        "vq_estimator.first_block.2.conv.0.norm.weight": (128,),
        "vq_estimator.swin_blks.2.residual_group.blocks.1.attn_mask": (16, 64, 64),
        "vq_estimator.swin_blks.0.residual_group.blocks.0.attn.relative_position_bias_table": (225, 8),
        "vq_estimator.swin_blks.0.residual_group.blocks.0.mlp.fc1.weight": (512, 128),
        "vq_estimator.out_block.1.weight": (256, 128, 3, 3),
        "fusion_module.fusion_modules.block_1_8.fuse_block.conv_out.weight": (512, 704, 1, 1),
        "fusion_module.fusion_modules.block_1_2.scale.2.weight": (256, 256, 3, 3),
        "vq_model.quantize.embedding.weight": (256, 4),
    }
    for k, shape in expected.items():
        assert shapes.get(k) == shape, k
    assert "vq_estimator.swin_blks.0.residual_group.blocks.0.attn_mask" not in sd
    total = _param_count(sd, "")
    print(f"full-size DC-VIC: {total / 1e6:.2f}M floats in the state dict, "
          f"{_param_count(sd, 'vq_model.') / 1e6:.2f}M of them in the VQGAN")


def test_bits_per_pixel_helper():
    lik = torch.full((2, 3, 4, 4), 0.5)
    assert torch.allclose(bits_per_pixel(lik, 16), torch.tensor([3.0, 3.0]))


def test_reference_checkpoint_conversion(tmp_path):
    from src.models.codec.convert import load_reference_checkpoint, reference_state_dict

    src = build(8).eval()
    src.update(force=True)
    old = {}
    for k, v in src.state_dict().items():  # DDP prefix + CompressAI < 1.2 bottleneck names
        k = k.replace("entropy_model_z.matrices.", "entropy_model_z._matrix")
        k = k.replace("entropy_model_z.biases.", "entropy_model_z._bias")
        k = k.replace("entropy_model_z.factors.", "entropy_model_z._factor")
        if not k.endswith("likelihood_lower_bound.bound"):
            old["module." + k] = v
    old["module.entropy_model_y.some_future.scale_bound"] = torch.ones(1)
    path = tmp_path / "dc_vic_fake.pth.tar"
    torch.save({"comp_model": old, "iter": 1}, path)
    dst = build(9).eval()
    res = load_reference_checkpoint(dst, str(path))
    assert not res.missing_keys and not res.unexpected_keys
    assert torch.equal(dst.entropy_model_z.matrices[0], src.entropy_model_z.matrices[0])
    assert set(reference_state_dict({"comp_model": old}, dst)) == set(dst.state_dict())


def test_split_decoding_matches_between_forward_and_decompress(photo):
    m = build(10).eval()
    m.update(force=True)
    m.split_threshold, m.split_window, m.split_stride = 64, 64, 32  # windows of 4x4 y (8x8 here)
    with torch.no_grad():
        ref = m(photo, 2.0, 1.0)
        whole = m.decode(ref["y_hat"], 2.0, 1.0)["x_hat"].clamp(-1, 1)
        enc = m.compress(photo, 2.0, 1.0)
        dec = m.decompress(enc["strings"], enc["shape"], 2.0, 1.0)
        sender = m.decode_split(enc["y_hat"], 2.0, 1.0, 1.0, 64, 32).clamp(-1, 1)
    assert "vq_logits" not in ref and ref["x_hat"].shape == photo.shape
    assert torch.equal(dec["x_hat"], sender)
    assert not torch.equal(whole, ref["x_hat"])  # windows really were used
    assert (ref["x_hat"] - whole).abs().mean() < 0.5


def test_latent_codec_contract_and_state_dict_names(model):
    """h_a / bottleneck / h_s / ChARM form one CompressAI LatentCodec; the state dict keeps the
    reference's names and the model's compress is g_a followed by the latent codec's."""
    from compressai.latent_codecs import LatentCodec

    model.eval()
    model.update(force=True)
    codec = model.latent_codec
    assert isinstance(codec, LatentCodec) and codec.hyperdecoder is model.hyperdecoder
    assert not any(k.startswith("latent_codec.") for k in model.state_dict())
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        y = model.encode(x, 1.0, 2.0)["y"]
        enc = codec.compress(y, estimate=True)
        assert enc["strings"] == model.compress(x, 1.0, 2.0)["strings"]
        assert torch.equal(codec.decompress(enc["strings"], enc["shape"])["y_hat"], enc["y_hat"])
        lik = codec(y, training=False)["likelihoods"]
    assert enc["estimated_bits"][1]["y"] == pytest.approx(float(-torch.log2(lik["y"][1].double()).sum()))
    with pytest.raises(ValueError, match="one group of strings"):
        codec.decompress(enc["strings"] * 2, enc["shape"])
