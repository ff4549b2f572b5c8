"""VQGAN: strict loading of taming-format checkpoints, equality with taming's modules, freezing,
the decoder feature hook."""
import copy
import sys
import types

import pytest
import torch
from torch import nn

from src.models.vq import OFFICIAL_CONFIGS, VQGAN, build_pretrained_vq_model, vq_state_dict
from src.utils.registry import MODELS

taming_model = pytest.importorskip("taming.modules.diffusionmodules.model")
taming_quantize = pytest.importorskip("taming.modules.vqvae.quantize")

# f8 layout with narrow widths (ch 32) so CPU forwards take milliseconds
SMALL_DD = dict(double_z=False, z_channels=4, resolution=256, in_channels=3, out_ch=3, ch=32,
                ch_mult=[1, 2, 2, 4], num_res_blocks=2, attn_resolutions=[32], dropout=0.0)
SMALL = dict(embed_dim=4, n_embed=64, ddconfig=SMALL_DD)


class TamingVQ(nn.Module):
    """The reference: taming's own modules under VQModel's attribute names."""

    def __init__(self, embed_dim, n_embed, ddconfig):
        super().__init__()
        self.encoder = taming_model.Encoder(**ddconfig)
        self.decoder = taming_model.Decoder(**ddconfig)
        self.quantize = taming_quantize.VectorQuantizer2(n_embed, embed_dim, beta=0.25,
                                                         sane_index_shape=True)
        self.quant_conv = nn.Conv2d(ddconfig["z_channels"], embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(embed_dim, ddconfig["z_channels"], 1)

    def encode(self, x):
        z_q, _, (_, _, indices) = self.quantize(self.quant_conv(self.encoder(x)))
        return z_q, indices

    def decode(self, z_q):
        return self.decoder(self.post_quant_conv(z_q))


def official_ckpt(model: nn.Module) -> dict:
    """A checkpoint in the published format, with the training loss's entries."""
    sd = dict(model.state_dict())
    sd["loss.logvar"] = torch.zeros(())
    sd["loss.discriminator.main.0.weight"] = torch.randn(64, 3, 4, 4)
    sd["loss.perceptual_loss.lin0.model.1.weight"] = torch.randn(1, 64, 1, 1)
    return {"state_dict": sd, "epoch": 3, "global_step": 1000}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Seeded taming model with a codebook spread over the photo's latents, saved officially."""
    from skimage import data

    torch.manual_seed(0)
    ref = TamingVQ(**SMALL).eval()
    img = torch.from_numpy(data.astronaut()[128:256, 192:320].copy())
    x = img.permute(2, 0, 1).float().unsqueeze(0) / 127.5 - 1
    x = torch.nn.functional.avg_pool2d(x, 2)  # 64 x 64 photo: CPU-fast, still real content
    with torch.no_grad():
        h = ref.quant_conv(ref.encoder(x)).permute(0, 2, 3, 1).reshape(-1, 4)
        pick = torch.randperm(h.shape[0])[: SMALL["n_embed"]]
        ref.quantize.embedding.weight.copy_(h[pick] + 0.01 * torch.randn(len(pick), 4))
    path = tmp_path_factory.mktemp("ckpt") / "vq-f8-n64.ckpt"
    torch.save(official_ckpt(ref), path)
    return ref, path, x


def test_matches_taming_on_photo(reference):
    ref, path, x = reference
    ours = build_pretrained_vq_model(str(path), **SMALL)
    with torch.no_grad():
        zq_ref, idx_ref = ref.encode(x)
        zq, idx = ours.encode(x)
        out_ref, out = ref.decode(zq_ref), ours.decode(zq)
    assert idx.dtype == torch.long and idx.shape == (1, 8, 8)
    assert torch.equal(idx, idx_ref)
    assert idx.unique().numel() > 8  # the comparison exercises many codes
    assert torch.allclose(zq, zq_ref, atol=1e-6)
    assert out.shape == x.shape
    assert torch.allclose(out, out_ref, atol=1e-5, rtol=1e-4)
    with torch.no_grad():
        from_idx = ours.decode_indices(idx)
        lat = ours.indices_to_latent(idx)
    assert lat.shape == (1, 4, 8, 8)
    assert torch.allclose(lat, ref.quantize.get_codebook_entry(idx.reshape(-1), (1, 8, 8, 4)))
    assert torch.allclose(from_idx, out_ref, atol=1e-5, rtol=1e-4)


def test_forward_dict_and_registry(reference):
    _, path, x = reference
    model = MODELS.build({"type": "VQGAN", **SMALL})
    model.load_state_dict(vq_state_dict(torch.load(path, weights_only=True)))
    out = model(x[..., :32, :32])
    assert out["x_hat"].shape == (1, 3, 32, 32)
    assert out["quant"].loss.dim() == 0 and out["quant"].indices.shape == (1, 4, 4)
    out["x_hat"].mean().backward()
    assert model.encoder.conv_in.weight.grad is not None


def test_bare_state_dict_and_lightning_pickle(reference, tmp_path):
    ref, _, x = reference
    bare = tmp_path / "bare.ckpt"
    torch.save(ref.state_dict(), bare)
    a = build_pretrained_vq_model(str(bare), **SMALL)
    # a Lightning-style file pickling an object of a package that is not installed
    fake = types.ModuleType("fake_lightning_pkg")

    class ModelCheckpoint:
        def __init__(self):
            self.best = 1.0

    ModelCheckpoint.__module__ = fake.__name__
    ModelCheckpoint.__qualname__ = "ModelCheckpoint"
    fake.ModelCheckpoint = ModelCheckpoint
    sys.modules[fake.__name__] = fake
    try:
        ckpt = official_ckpt(ref)
        ckpt["callbacks"] = {ModelCheckpoint: ModelCheckpoint()}
        torch.save(ckpt, tmp_path / "pl.ckpt")
    finally:
        del sys.modules[fake.__name__]
    b = build_pretrained_vq_model(str(tmp_path / "pl.ckpt"), **SMALL)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


def test_strict_load_rejects_mismatch(reference, tmp_path):
    ref, _, _ = reference
    sd = dict(ref.state_dict())
    sd.pop("quant_conv.bias")
    torch.save({"state_dict": sd}, tmp_path / "bad.ckpt")
    with pytest.raises(RuntimeError, match="quant_conv.bias"):
        build_pretrained_vq_model(str(tmp_path / "bad.ckpt"), **SMALL)


def test_full_f8_n256_keys_count_and_strict_load(tmp_path):
    cfg = OFFICIAL_CONFIGS["f8-n256"]
    torch.manual_seed(0)
    ref = TamingVQ(**cfg)
    path = tmp_path / "vq-f8-n256.ckpt"
    torch.save(official_ckpt(ref), path)
    del ref
    ours = build_pretrained_vq_model(str(path), **cfg, monitor="val/rec_loss",
                                     lossconfig={"target": "x"})
    n = sum(p.numel() for p in ours.parameters())
    assert 67.5e6 < n < 67.9e6, n
    keys = set(ours.state_dict())
    assert {"quantize.embedding.weight", "quant_conv.weight", "post_quant_conv.bias",
            "encoder.down.3.attn.1.proj_out.weight", "decoder.up.3.attn.2.q.weight",
            "decoder.up.1.upsample.conv.weight", "encoder.down.1.block.0.nin_shortcut.weight",
            "decoder.mid.attn_1.k.weight"} <= keys
    assert not any(k.startswith("decoder.up.2.attn.") for k in keys)
    assert ours.decoder.level_channels() == {3: 512, 2: 256, 1: 256, 0: 128}
    assert ours.quantize.embedding.weight.shape == (256, 4)


def test_missing_checkpoint_message(tmp_path):
    missing = tmp_path / "nowhere" / "model.ckpt"
    with pytest.raises(FileNotFoundError) as err:
        build_pretrained_vq_model(str(missing), **OFFICIAL_CONFIGS["f8-n256"])
    msg = str(err.value)
    assert str(missing) in msg and "vq-f8-n256.ckpt" in msg
    assert "https://ommer-lab.com/files/latent-diffusion/vq-f8-n256.zip" in msg
    assert "taming-transformers" in msg
    with pytest.raises(FileNotFoundError, match="vq-f16-n16384.ckpt"):
        build_pretrained_vq_model(str(missing), **OFFICIAL_CONFIGS["f16-n16384"])


def test_random_init_warns_and_freezes_through_parent_train():
    with pytest.warns(UserWarning, match="RANDOMLY INITIALISED"):
        vq = build_pretrained_vq_model(None, **SMALL)
    parent = nn.ModuleDict({"vq": vq, "head": nn.Linear(2, 2)})
    parent.train()
    assert parent["head"].training
    assert not any(m.training for m in vq.modules())
    assert not any(p.requires_grad for p in vq.parameters())
    with pytest.warns(UserWarning):
        unfrozen = build_pretrained_vq_model(None, freeze=False, **SMALL)
    unfrozen.train()
    assert unfrozen.training and all(p.requires_grad for p in unfrozen.parameters())


def test_ddconfig_validation():
    with pytest.raises(KeyError, match="valid keys"):
        VQGAN(embed_dim=4, n_embed=8, ddconfig={**SMALL_DD, "chmult": [1]})
    with pytest.raises(ValueError, match="divisible by 8"):
        VQGAN(**SMALL).encode(torch.zeros(1, 3, 36, 36))


def test_feature_hook_levels_shapes_and_identity(reference):
    _, path, x = reference
    model = build_pretrained_vq_model(str(path), **SMALL)
    seen = []

    def record(i_level, h):
        seen.append((i_level, tuple(h.shape)))
        return h

    with torch.no_grad():
        latent, _ = model.encode(x)
        plain = model.decode(latent)
        hooked = model.decode(latent, feature_hook=record)
    assert torch.equal(plain, hooked)
    ch = SMALL_DD["ch"]
    assert seen == [(3, (1, 4 * ch, 8, 8)), (2, (1, 2 * ch, 16, 16)),
                    (1, (1, 2 * ch, 32, 32)), (0, (1, ch, 64, 64))]
    assert model.decoder.level_channels() == {3: 4 * ch, 2: 2 * ch, 1: 2 * ch, 0: ch}

    def scale_level_1(i_level, h):  # a hook that edits features changes the output
        return h * 2 if i_level == 1 else h

    with torch.no_grad():
        changed = model.decode(latent, feature_hook=scale_level_1)
    assert not torch.allclose(changed, plain)


def test_other_quantizer_in_vqgan():
    model = VQGAN(embed_dim=4, n_embed=1000, ddconfig=SMALL_DD, quantizer={"type": "fsq"})
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    latent, idx = model.encode(x)
    assert latent.shape == (1, 4, 4, 4) and int(idx.max()) < 1000
    assert torch.allclose(model.indices_to_latent(idx), latent, atol=1e-6)
    state = copy.deepcopy(model.state_dict())
    assert not any(k.startswith("quantize.embedding") for k in state)
