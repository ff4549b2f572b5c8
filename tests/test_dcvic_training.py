"""DC-VIC training steps on a toy-width model and the bundled photos (CPU)."""
import os

import pytest
import torch

from src.trainer import DCVICTrainer, Recipe, build_trainer
from src.utils.checkpoint import checkpoint_path, model_state_from_file
from src.utils.config import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOY_PRIOR = os.path.join(ROOT, "checkpoint", "quickstart_vqgan_prior.pth")   # shipped (dcvic_tiny.yaml)


def cfg_for(step, tmp_path, sample_dir, *extra):
    opts = [f"ckpt_dir={tmp_path}", "subnet.vq_model.ckpt_path=null", f"dataset.train_dataset.root_dir={sample_dir}",
            "dataset.train_dataset.image_size=64", "eval_step=null", "log_step=1", "total_iter=2", "save_step=2",
            *extra]
    return load_config(os.path.join(ROOT, "config", "quickstart", f"{step}.yaml"), opts)


def state(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def same(a, b, prefixes):
    keys = [k for k in a if k.startswith(prefixes)]
    assert keys
    return all(torch.equal(a[k], b[k]) for k in keys)


def test_chain_through_load_checkpoint_and_step13_freezes_rates(tmp_path, sample_dir):
    t11 = build_trainer(cfg_for("stage1_1", tmp_path, sample_dir), exp_name="s11", device="cpu")
    t11.train()
    t12 = build_trainer(cfg_for("stage1_2", tmp_path, sample_dir, "load_checkpoint.exp=s11", "load_checkpoint.iter=2"),
                        exp_name="s12", device="cpu")
    s11 = model_state_from_file(checkpoint_path(tmp_path, "s11", 2))
    # the toy step 1-2 trains at its own learning rate after loading step 1-1 (the published
    # load_checkpoint.new_g_lr 1e-4 it inherits once overrode it: 300 steps at 1e-4 learned nothing)
    assert t12.optimizers["g"].param_groups[0]["lr"] == pytest.approx(float(t12.cfg.optim.g_optimizer.lr))
    loaded = state(t12.model)
    assert same(loaded, s11, ("hyperencoder.", "context_model.", "vq_estimator."))
    t12.train()
    t13 = build_trainer(cfg_for("stage1_3", tmp_path, sample_dir, "load_checkpoint.exp=s12", "load_checkpoint.iter=2"),
                        exp_name="s13", device="cpu")
    before = state(t13.model)
    assert same(before, model_state_from_file(checkpoint_path(tmp_path, "s12", 2)), ("encoder.", "decoder."))
    t13.train()
    after = state(t13.model)
    frozen = ("encoder.", "hyperencoder.", "hyperdecoder.", "context_model.", "entropy_model_z.", "entropy_model_y.",
              "vq_model.")
    assert same(before, after, frozen)                       # rates stay fixed
    assert not same(before, after, ("decoder.",))            # the decoder trained
    assert not same(before, after, ("vq_estimator.",))
    t3 = build_trainer(cfg_for("stage3", tmp_path, sample_dir, "load_checkpoint.exp=s13", "load_checkpoint.iter=2"),
                       exp_name="s3", device="cpu")
    d13 = torch.load(checkpoint_path(tmp_path, "s13", 2), weights_only=False)["discriminator"]
    assert all(torch.equal(v, d13[k]) for k, v in t3.discriminator.state_dict().items())
    rates, vqs = t3.sample_betas(64)
    pairs = set(zip(t3.cfg.model.selected_beta_rate, t3.cfg.model.selected_beta_vq))
    assert {(round(r, 4), round(v, 4)) for r, v in zip(rates.tolist(), vqs.tolist())} <= \
        {(round(r, 4), round(v, 4)) for r, v in pairs}
    assert t3.train() == 2


@pytest.mark.parametrize("name, betas, rate, gan, optimizers", [
    ("RateDistortionVqCodeTrainer", False, True, "none", {"g", "aux"}),
    ("DualBetaCondRateDistortionVqCodeTrainer", True, True, "none", {"g", "aux"}),
    ("DualBetaCondGanDistortionVqCodeTrainer", True, False, "patchgan", {"g", "d"}),
    ("DualBetaCondOASISGanDistortionVqCodeTrainer", True, False, "oasis", {"g", "d"}),
    ("DualBetaCondOasisGanDistortionVqFusionTrainer", True, False, "oasis", {"g", "d"}),
])
def test_the_five_reference_names_are_recipes_of_one_trainer(tmp_path, sample_dir, name, betas, rate, gan,
                                                             optimizers):
    step = {"none": "stage1_2", "patchgan": "stage1_3", "oasis": "stage1_3_oasis"}[gan]
    trainer = build_trainer(cfg_for(step, tmp_path, sample_dir, "load_checkpoint=null", f"trainer.type={name}"),
                            exp_name="r", device="cpu", dry_run=True)
    assert type(trainer) is DCVICTrainer
    assert trainer.recipe == Recipe(betas=betas, rate=rate, gan=gan)
    assert set(trainer.optimizers) == optimizers
    assert ("discriminator" in trainer.checkpoint_modules()) == (gan != "none")
    assert (trainer.sample_betas(3)[0] is None) == (not betas)
    trained = {n.split(".")[0] for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert ("encoder" in trained) == rate and "decoder" in trained and "vq_model" not in trained


def test_open_recipe_trains_rate_and_gan_together(tmp_path, sample_dir):
    """The composition is not limited to the published steps: rate and a PatchGAN in one step
    train the encoder, the entropy models' quantiles and the discriminator at once."""
    cfg = cfg_for("stage1_3", tmp_path, sample_dir, "load_checkpoint=null", "trainer.type=DCVICTrainer",
                  "+trainer.rate=true", "+trainer.gan=patchgan", "+loss.rate_loss={type: RateLoss, loss_weight: 1.0}",
                  "+optim.aux_optimizer={type: Adam, lr: 0.001}")
    trainer = build_trainer(cfg, exp_name="joint", device="cpu", dry_run=True)
    assert trainer.recipe == Recipe(betas=True, rate=True, gan="patchgan")
    g0, d0 = state(trainer.model), state(trainer.discriminator)
    logs = trainer.train_step(trainer._to_device(next(iter(trainer.train_loader))), 0)
    assert {"rate", "adv", "aux", "d_real", "d_fake"} <= set(logs)
    g1, d1 = state(trainer.model), state(trainer.discriminator)
    assert not same(g0, g1, ("encoder.",)) and not same(g0, g1, ("entropy_model_z.",))
    assert not same(d0, d1, ("main.",))
    assert same(g0, g1, ("vq_model.",))


@pytest.mark.parametrize("opts, message", [
    (["trainer.type=DualBetaCondOASISGanDistortionVqCodeTrainer"], "OASISLoss"),
    (["trainer.type=DCVICTrainer", "+trainer.gan=wgan"], "trainer.gan must be one of"),
    (["trainer.type=DCVICTrainer", "+trainer.rate=sometimes"], "trainer.rate must be true or false"),
    (["trainer.type=DCVICTrainer", "+trainer.rate=true", "+trainer.gan=patchgan"], "needs loss.rate_loss"),
])
def test_a_recipe_its_losses_do_not_serve_is_refused(tmp_path, sample_dir, opts, message):
    with pytest.raises(ValueError, match=message):
        build_trainer(cfg_for("stage1_3", tmp_path, sample_dir, "load_checkpoint=null", *opts), exp_name="bad",
                      device="cpu", dry_run=True)


def test_oasis_trainer_trains_discriminator(tmp_path, sample_dir):
    trainer = build_trainer(cfg_for("stage1_3_oasis", tmp_path, sample_dir, "load_checkpoint=null"),
                            exp_name="oasis", device="cpu")
    d_before = state(trainer.discriminator)
    batch = trainer._to_device(next(iter(trainer.train_loader)))
    logs = trainer.train_step(batch, 0)
    assert all(torch.isfinite(torch.tensor(logs[k])) for k in ("d_real", "d_fake", "adv"))
    assert not same(d_before, state(trainer.discriminator), ("main.", "mlp."))


def test_grid_betas_use_101_levels(tmp_path, sample_dir):
    trainer = build_trainer(cfg_for("stage1_2", tmp_path, sample_dir, "load_checkpoint=null"), exp_name="b",
                            device="cpu")
    torch.manual_seed(0)
    rate, vq = trainer.sample_betas(4000)
    top = trainer.model.beta_space.max_rate                  # the toy range: config/_base_/quickstart_beta_range.yaml
    steps = rate / (top / 100)
    assert torch.allclose(steps, steps.round(), atol=1e-4)
    assert rate.min() == 0 and rate.max() == pytest.approx(top) and vq.max() == pytest.approx(3.5)
    assert len(set(rate.tolist())) == 101
    assert not torch.equal(rate[:10], rate[10:20])           # drawn per sample


def _quickstart_crop() -> int:
    """The training crop size of the quickstart's step 1-2."""
    from src.utils.config import load_config

    return int(load_config(os.path.join(ROOT, "config", "quickstart", "stage1_2.yaml")).dataset.train_dataset.image_size)


def test_step12_learns_rate_control(trained_toy_codec, sample_dir):
    """After training, the loss has fallen and estimated bpp falls from beta_rate 0 to max (beta_vq fixed)."""
    from src.models.codec.loading import load_codec
    from src.data.datasets import ImageDataset

    losses = trained_toy_codec["losses"]
    assert sum(losses[-20:]) < sum(losses[:20])
    model, _ = load_codec(os.path.join(ROOT, "config", "quickstart", "stage1_2.yaml"), trained_toy_codec["path"],
                          "cpu", [f"subnet.vq_model.ckpt_path={TOY_PRIOR}"])
    ds = ImageDataset(str(sample_dir), image_size=_quickstart_crop())      # crops like the training ones
    x = torch.stack([ds[(i % len(ds), 1000 + i)]["image"] for i in range(16)])
    with torch.no_grad():
        top = model.beta_space.max_rate
        bpps = [model(x, torch.full((16,), r), torch.full((16,), 1.75))["bpp"].mean().item() for r in (0.0, top / 2, top)]
    # the highest beta_rate gives the lowest rate and the lowest beta_rate more than the highest
    # (after a few hundred CPU steps the middle of the curve is not yet ordered; training is seeded, 1 thread)
    assert bpps[2] < min(bpps[0], bpps[1]), bpps
    assert bpps[0] > bpps[2] * 1.02, bpps


@pytest.fixture(scope="module")
def held_out_probe(trained_toy_codec, tmp_path_factory):
    """The trained toy step 1-2 probed on 16 crops of photos it did not train on: estimated bpp and
    VQ-index accuracy at five beta_rate values (0 to the model's maximum) for beta_vq 0, 1.75 and 3.5."""
    from scripts.diagnose_rate_control import HELD_OUT_PHOTOS, probe
    from src.data.datasets import ImageDataset, export_sample_photos
    from src.models.codec.loading import load_codec

    folder = tmp_path_factory.mktemp("held_out")
    export_sample_photos(folder, HELD_OUT_PHOTOS)
    model, _ = load_codec(os.path.join(ROOT, "config", "quickstart", "stage1_2.yaml"), trained_toy_codec["path"],
                          "cpu", [f"subnet.vq_model.ckpt_path={TOY_PRIOR}"])
    ds = ImageDataset(str(folder), image_size=_quickstart_crop(), seed=1)  # crops like the training ones
    x = torch.stack([ds[(i % len(ds), 1000 + i)]["image"] for i in range(16)])
    betas = [model.beta_space.max_rate * k / 4 for k in range(5)]                  # 0 .. max
    return {vq: probe(model.eval(), x, betas, vq) for vq in (0.0, 1.75, 3.5)}


# The paper's two properties, as issue 13 asks them of the toy recipe (the shipped step 1-1, then step 1-2 of
# config/quickstart/ at the fixture's budget, conftest.TOY_STEPS, on the shipped prior), on 16 crops of photos
# step 1-2 did not train on, of the training crops' size. Measured once (seeded, one thread; beta_rate 0, 1.25,
# 2.5, 3.75, 5): at beta_vq 1.75, bpp 0.1739, 0.1643, 0.1007, 0.0510, 0.0248 (ratio 0.14); VQ-index accuracy at
# beta_vq 0 / 1.75 / 3.5: 0.24 / 0.25 / 0.26 at beta_rate 0, 0.18 / 0.21 / 0.25 at 2.5, 0.05 / 0.07 / 0.12 at 5
# (means 0.155 / 0.180 / 0.217). From a 240-step step 1-1 trained in the fixture (and beta_rate in [0, 3]) the
# accuracy stayed at 0.06-0.08 whatever beta_vq.


def test_step12_rate_falls_strictly_with_beta_rate_on_held_out_photos(held_out_probe):
    bpps = [r["bpp"] for r in held_out_probe[1.75]]
    assert all(a > b for a, b in zip(bpps, bpps[1:])), bpps          # strictly falling at 5 values


def test_step12_rate_span_on_held_out_photos(held_out_probe):
    bpps = [r["bpp"] for r in held_out_probe[1.75]]
    assert bpps[-1] <= 0.7 * bpps[0], bpps


def test_step12_vq_accuracy_rises_with_beta_vq(held_out_probe):
    """At each of the five beta_rate values the estimator's VQ-index accuracy is higher at beta_vq 3.5 than
    at 0; averaged over them it rises strictly with beta_vq (0, 1.75, 3.5), by at least 0.05 from 0 to 3.5
    (a standard error of one difference at 4096 indices is ~0.01). At beta_rate 0 the rate carries most of
    the indices whatever beta_vq, and the rise is smallest there."""
    acc = {vq: [r["vq_acc"] for r in held_out_probe[vq]] for vq in (0.0, 1.75, 3.5)}
    assert all(hi > lo for lo, hi in zip(acc[0.0], acc[3.5])), acc
    mean = [sum(a) / len(a) for a in acc.values()]
    assert mean[0] < mean[1] < mean[2] and mean[2] >= mean[0] + 0.05, mean


def test_grid_betas_are_the_reference_floats():
    """``max * (i / 100)`` in float32, as the reference's ``_sample_beta`` (numpy float32) computes them."""
    import numpy as np

    from src.models.codec.betas import BetaSpace

    i = np.arange(101).astype(np.float32)
    space = BetaSpace(3.0, 3.5, levels=100)
    torch.manual_seed(0)
    drawn = space.sample(5000, True, "cpu")
    for top, ours in zip((3.0, 3.5), drawn):
        reference = set(torch.Tensor(top * (i / float(100))).tolist())
        assert set(ours.tolist()) == reference == set(space.grid(top).tolist())


def test_toy_fusion_starts_as_the_priors_decoding(photo):
    """The toy config initialises the SFT fusion small (``fusion_module.weight_init``), so an untrained
    model decodes its estimated codes as the prior does and training starts from the prior's image.

    With PyTorch's default initialisation (the published config's) each fusion block starts with a
    scale and shift of order 1, which buries the prior's output: the toy recipe then spent its whole
    CPU budget undoing it (100 steps at 100% correct codes on a fixed batch: 15.9 dB against the
    prior's 21.2 dB; with the small initialisation 23.2 dB by step 50).
    """
    from src.models.codec.loading import build_codec

    def fusion_psnr(*extra):
        cfg = load_config(os.path.join(ROOT, "config", "quickstart", "stage1_1.yaml"),
                          [f"subnet.vq_model.ckpt_path={TOY_PRIOR}", *extra])
        torch.manual_seed(0)
        model = build_codec(cfg).eval()
        y_hat = model.entropy(model.encode(photo)["y"])["y_hat"]
        with torch.no_grad():
            fused, plain = (model.decode(y_hat, fusion_w=w)["x_hat"] for w in (1.0, 0.0))
        return (-10 * torch.log10(((fused - plain) / 2).pow(2).mean())).item()

    assert fusion_psnr() > 35.0
    assert fusion_psnr("subnet.fusion_module.weight_init=false") < 25.0      # the test can tell them apart
