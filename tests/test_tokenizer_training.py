"""Tokenizer training (VQGANTrainer) at toy width on CPU, and the tokenizer configs."""
import math
from pathlib import Path

import pytest
import torch
from torch import nn

import src.models  # noqa: F401  (fills MODELS / SUBNETS)
from src.models.vq import OFFICIAL_CONFIGS
from src.trainer.vqgan_trainer import ModelEMA, VQGANTrainer
from src.utils.checkpoint import checkpoint_path
from src.utils.config import load_config
from src.utils.registry import MODELS, SUBNETS, TRAINERS

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "config" / "tokenizer" / "quickstart"


@pytest.fixture(scope="module")
def small_photos(tmp_path_factory):
    """Two small real photos (64x64 and 48x80) for training and validation."""
    from PIL import Image
    from skimage import data

    folder = tmp_path_factory.mktemp("small_photos")
    Image.fromarray(data.astronaut()[100:164, 180:244]).save(folder / "astronaut.png")
    Image.fromarray(data.coffee()[150:198, 200:280]).save(folder / "coffee.png")
    return folder


def tiny_cfg(name, tmp_path, photos, *extra):
    opts = [f"ckpt_dir={tmp_path}", f"dataset.train_dataset.root_dir={photos}",
            f"dataset.eval_dataset.root_dir={photos}", "dataset.train_dataset.image_size=32", "log_step=1",
            "eval_step=null", *extra]
    return load_config(QUICK / f"quickstart_{name}.yaml", opts)


def recording(trainer):
    """Keep every dict ``train_step`` returns (the logger drops non-finite values)."""
    logs, step = [], trainer.train_step
    trainer.train_step = lambda batch, it: logs.append(step(batch, it)) or logs[-1]
    return logs


def test_vqgan_three_steps_gan_ema_checkpoint_and_resume(tmp_path, small_photos):
    cfg = tiny_cfg("vqgan", tmp_path, small_photos, "dataset.train_dataset.image_size=64", "total_iter=3",
                   "save_step=3", "eval_step=3", "trainer.disc_start=1", "trainer.ema_decay=0.5")
    assert TRAINERS.get("VQGANTrainer") is VQGANTrainer
    trainer = VQGANTrainer(cfg, exp_name="tok", device="cpu")
    d_before = {k: v.clone() for k, v in trainer.discriminator.state_dict().items()}
    logs = recording(trainer)
    assert trainer.train() == 3

    assert all(math.isfinite(v) for row in logs for v in row.values())
    assert {"rec", "perceptual", "quant", "usage", "perplexity", "entropy"} <= set(logs[0])
    assert "gan" not in logs[0] and "d_real" not in logs[0]          # it 0 < disc_start
    for row in logs[1:]:                                              # GAN phase: G and D terms
        assert {"gan", "gan_weight", "d_real", "d_fake"} <= set(row)
        assert row["gan_weight"] > 0
    d_after = trainer.discriminator.state_dict()
    assert any(not torch.equal(d_before[k], d_after[k]) for k in d_before if k.endswith("weight"))
    raw, ema = trainer.model.state_dict(), trainer.ema.model.state_dict()
    assert any(not torch.equal(raw[k], ema[k]) for k in raw if raw[k].is_floating_point())

    path = checkpoint_path(tmp_path, "tok", 3)
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    assert {"comp_model", "discriminator", "ema_model", "optimizers"} <= set(ckpt)
    assert set(ckpt["ema_model"]) == set(ckpt["comp_model"])
    assert sorted(ckpt["optimizers"]) == ["d", "g"]
    assert (tmp_path / "tok" / "samples" / "iter_3" / "astronaut.png").is_file()

    resumed = VQGANTrainer(cfg, exp_name="tok", device="cpu")         # strict load of all three
    assert resumed.start_iter == 3
    assert all(torch.equal(v, ema[k]) for k, v in resumed.ema.model.state_dict().items())

    cfg.load_checkpoint = {"exp": "tok", "iter": 3, "load_discriminator": True}
    tuned = VQGANTrainer(cfg, exp_name="tuned", device="cpu")        # fine-tuning: EMA starts at the loaded weights
    assert all(torch.equal(v, raw[k]) for k, v in tuned.ema.model.state_dict().items())


def test_validation_metrics(tmp_path, small_photos):
    cfg = tiny_cfg("vqgan", tmp_path, small_photos, "loss.perceptual_loss=null", "eval_step=1")
    trainer = VQGANTrainer(cfg, exp_name="val", device="cpu", dry_run=True)
    trainer.model.eval()
    with torch.no_grad():
        metrics = trainer.validate(0)
    assert {"psnr", "ssim", "usage", "perplexity", "entropy"} <= set(metrics)
    assert set(metrics) <= {"psnr", "ssim", "usage", "perplexity", "entropy", "lpips", "rfid"}   # with the weights
    k = trainer.model.quantize.codebook_size
    assert 0 < metrics["usage"] <= 1 and 1 <= metrics["perplexity"] <= k
    assert metrics["entropy"] == pytest.approx(math.log(metrics["perplexity"]), rel=1e-5)


def test_ema_follows_the_decay_formula():
    model = nn.Linear(3, 2)
    model.register_buffer("steps", torch.tensor(0))
    ema = ModelEMA(model, decay=0.9)
    assert not any(p.requires_grad for p in ema.model.parameters())
    old = {k: v.clone() for k, v in ema.model.state_dict().items()}
    with torch.no_grad():
        model.weight.add_(1.0)
        model.bias.mul_(-2.0)
        model.steps.fill_(5)
    ema.update(model)
    new = ema.model.state_dict()
    for name in ("weight", "bias"):
        expected = 0.9 * old[name] + 0.1 * model.state_dict()[name]
        assert torch.allclose(new[name], expected, atol=1e-7)
    assert int(new["steps"]) == 5                                     # integer buffers are copied
    with pytest.raises(ValueError):
        ModelEMA(model, decay=1.0)


@pytest.mark.parametrize("name", ["fsq", "cvqvae"])
def test_fsq_and_cvq_train_two_steps(tmp_path, small_photos, name):
    cfg = tiny_cfg(name, tmp_path, small_photos, "loss.perceptual_loss=null", "total_iter=2", "save_step=2",
                   "trainer.disc_start=1", "trainer.ema_decay=null")
    trainer = VQGANTrainer(cfg, exp_name=name, device="cpu")
    logs = recording(trainer)
    assert trainer.train() == 2
    assert checkpoint_path(tmp_path, name, 2).is_file()
    assert all(math.isfinite(v) for row in logs for v in row.values())
    if name == "fsq":
        assert trainer.model.quantize.codebook_size == 8000
        assert all(row["quant"] == 0.0 for row in logs)               # FSQ has no quantizer loss
    else:
        assert "dead_codes" in logs[0] and logs[0]["q_commitment"] > 0
        assert float(trainer.model.quantize.embed_prob.sum()) > 0     # the usage EMA moved


def test_mse_reconstruction_and_fixed_gan_weight(tmp_path, small_photos):
    cfg = tiny_cfg("vqgan", tmp_path, small_photos, "loss.perceptual_loss=null", "loss.rec_loss=mse",
                   "loss.adaptive_weight=false", "loss.gan_gain=0.5", "trainer.disc_start=0")
    trainer = VQGANTrainer(cfg, exp_name="mse", device="cpu", dry_run=True)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    logs = trainer.train_step({"image": x}, 0)
    assert logs["gan_weight"] == 0.5
    with pytest.raises(ValueError, match="rec_loss"):
        VQGANTrainer(tiny_cfg("vqgan", tmp_path, small_photos, "loss.rec_loss=l3"), exp_name="bad",
                     device="cpu", dry_run=True)


def tokenizer_configs():
    """The configs of the VQGAN family (other folders of config/tokenizer/ use other trainers)."""
    folders = ("vqgan", "cvqvae", "fsq", "lfq", "quickstart")
    return sorted(p for f in folders for p in (ROOT / "config" / "tokenizer" / f).glob("*.yaml"))


def test_tokenizer_configs_build():
    """Every VQGANTrainer config under config/tokenizer/ resolves; its model and discriminator build
    at reduced width (GroupNorm needs ch to be a multiple of 32) and run a 32x32 image."""
    shrink = ["model.ddconfig.ch=32", "model.ddconfig.num_res_blocks=1", "model.ddconfig.attn_resolutions=[]",
              "discriminator.ndf=8"]
    expected = {"vqgan_1024": 1024, "vqgan_8192": 8192, "vqgan_8192_dd2_aglwg075": 8192, "vqgan_f8_n256": 256,
                "cvqvae_8192_dd2_aglwg075": 8192, "fsq_8000": 8000, "fsq_64000": 64000, "lfq_16384": 16384}
    paths = [p for p in tokenizer_configs() if load_config(p).get("trainer", {}).get("type") == "VQGANTrainer"]
    assert {p.stem for p in paths} >= set(expected) | {"quickstart_vqgan", "quickstart_vqgan_prior",
                                                       "quickstart_cvqvae", "quickstart_fsq", "quickstart_lfq"}
    for path in paths:
        cfg = load_config(path, shrink)
        model = MODELS.build(cfg.model.to_dict())
        disc = SUBNETS.build(cfg.discriminator.to_dict())
        if path.stem in expected:
            assert model.quantize.codebook_size == expected[path.stem], path
        with torch.no_grad():
            out = model(torch.zeros(1, 3, 32, 32))
        assert out["x_hat"].shape == (1, 3, 32, 32), path
        assert disc(out["x_hat"]).ndim == 4
        full = load_config(path)
        if "dd2" in path.stem:
            assert full.discriminator.n_layers == 2 and full.loss.gan_gain == 0.75
        elif "quickstart" not in path.stem:
            assert full.discriminator.n_layers == 3
    f8 = load_config(ROOT / "config" / "tokenizer" / "vqgan" / "vqgan_f8_n256.yaml").model
    official = OFFICIAL_CONFIGS["f8-n256"]
    assert (f8.embed_dim, f8.n_embed, f8.ddconfig.to_dict()) == (official["embed_dim"], official["n_embed"],
                                                                 official["ddconfig"])


def test_prior_config_matches_dcvic_tiny():
    """The toy prior has the VQGAN layout that config/_base_/model/dcvic_tiny.yaml expects."""
    import yaml

    prior = load_config(QUICK / "quickstart_vqgan_prior.yaml").model
    tiny = yaml.safe_load((ROOT / "config" / "_base_" / "model" / "dcvic_tiny.yaml").read_text())
    for key, value in tiny["subnet"]["vq_model"]["ddconfig"].items():
        assert prior.ddconfig[key] == value, key
    assert prior.quantizer.to_dict() == tiny["subnet"]["vq_model"]["quantizer"]
    assert (prior.embed_dim, prior.n_embed, prior.ddconfig.ch_mult) == (4, 256, [1, 1, 2, 2])


def test_alternate_crop_trains_every_second_step_on_small_crops_of_the_batch(tmp_path, small_photos):
    """``trainer.alternate_crop`` (the quickstart prior's second phase): odd iterations see N crops
    of S px cut out of the batch, each a window of one of its images, the same ones on a re-run."""
    cfg = tiny_cfg("vqgan", tmp_path, small_photos, "dataset.train_dataset.image_size=64",
                   "+trainer.alternate_crop={size: 32, batch: 5}")
    trainer = VQGANTrainer(cfg, exp_name="alt", device="cpu", dry_run=True)
    x = torch.rand(2, 3, 64, 64)
    crops = trainer.crops_of(x, 7)
    assert crops.shape == (5, 3, 32, 32)
    windows = x.unfold(2, 32, 1).unfold(3, 32, 1)                     # (2, 3, 33, 33, 32, 32)
    for c in crops:
        assert (windows == c[None, :, None, None]).flatten(start_dim=4).all(dim=4).all(dim=1).any()
    assert torch.equal(trainer.crops_of(x, 7), crops) and not torch.equal(trainer.crops_of(x, 9), crops)

    seen = []
    trainer.net = lambda inp: seen.append(tuple(inp.shape)) or trainer.model(inp)
    for it in (0, 1):
        trainer.train_step({"image": x}, it)
    assert seen == [(2, 3, 64, 64), (5, 3, 32, 32)]


@pytest.mark.parametrize("spec", ["{size: 16}", "{size: 0, batch: 2}", "64"])
def test_alternate_crop_setting_is_checked(tmp_path, small_photos, spec):
    cfg = tiny_cfg("vqgan", tmp_path, small_photos, f"+trainer.alternate_crop={spec}")
    with pytest.raises(ValueError, match="alternate_crop"):
        VQGANTrainer(cfg, exp_name="alt", device="cpu", dry_run=True)
