"""scripts/quickstart.py's helpers and the toy VQGAN prior it ships with."""
import math
from pathlib import Path

import pytest
import torch
from PIL import Image

import scripts.quickstart as qs
from src.models.vq.vqgan import VQGAN, build_pretrained_vq_model
from src.utils.config import load_config

# the VQGAN section of the quickstart's DC-VIC configs (dcvic_tiny.yaml over the published model)
VQ = {k: v for k, v in load_config(qs.ROOT / "config" / "quickstart" / "stage1_2.yaml").subnet.vq_model.to_dict().items()
      if k != "ckpt_path"}


def test_shipped_prior_is_small_and_reconstructs_the_photos(sample_dir):
    """The shipped prior loads strictly into the layout of dcvic_tiny.yaml, is a small float16
    file, and reconstructs crops of the photos far better than chance with many codes in use."""
    from src.data.datasets import ImageDataset

    assert qs.SHIPPED_PRIOR.stat().st_size < 3_000_000
    model = build_pretrained_vq_model(str(qs.SHIPPED_PRIOR), **VQ)
    ds = ImageDataset(str(sample_dir), image_size=64, seed=3)
    x = torch.stack([ds[(i % len(ds), 500 + i)]["image"] for i in range(16)])
    with torch.no_grad():
        q, indices = model.encode(x)[:2]
        x_hat = model.decode(q).clamp(-1, 1)
    mse = ((x_hat - x) / 2).pow(2).mean().item()
    assert -10 * math.log10(mse) > 18.0
    assert len(indices.unique()) >= 64


def test_shipped_prior_decodes_whole_photos_as_well_as_crops(sample_dir):
    """The toy prior's GroupNorm layers normalise each channel over the whole input, so a prior
    trained on 64 px crops alone decoded whole photos 5.8 dB worse than crops of them (15.8 against
    21.6 dB). The shipped one (second phase: 256 px crops alternating with 64 px ones) must decode a
    whole photo within 1.5 dB of 64 px crops of the same photos."""
    from src.data.datasets import ImageDataset
    from src.utils.image_io import load_rgb, to_tensor

    model = build_pretrained_vq_model(str(qs.SHIPPED_PRIOR), **VQ).eval()

    def psnr(x):
        with torch.no_grad():
            x_hat = model.decode(model.encode(x)[0]).clamp(-1, 1)
        return -10 * math.log10(((x_hat - x) / 2).pow(2).mean().item())

    names = ("astronaut", "coffee")                               # 512 x 512 and 400 x 600
    whole = [psnr(to_tensor(load_rgb(sample_dir / f"{n}.png"))[None]) for n in names]
    ds = ImageDataset(str(sample_dir), image_size=64, seed=3)
    picks = [i for i, p in enumerate(ds.files) if Path(p).stem in names]
    crops = torch.stack([ds[(picks[i % 2], 700 + i)]["image"] for i in range(16)])
    assert min(whole) > 19.0
    assert sum(whole) / 2 > psnr(crops) - 1.5


def test_export_prior_keeps_only_float16_weights(tmp_path):
    torch.manual_seed(0)
    vq = VQGAN(**VQ)
    ckpt = tmp_path / "train.pth.tar"
    torch.save({"comp_model": vq.state_dict(), "iter": 5}, ckpt)
    out = tmp_path / "prior.pth"
    qs.export_prior(ckpt, out)
    payload = torch.load(out, weights_only=True)
    assert list(payload) == ["state_dict"]
    assert all(v.dtype == torch.float16 for v in payload["state_dict"].values() if v.is_floating_point())
    loaded = build_pretrained_vq_model(str(out), **VQ)              # strict
    w = "decoder.conv_out.weight"
    assert torch.equal(loaded.state_dict()[w], vq.state_dict()[w].half().float())


def test_photo_names_match_the_dataset_module():
    from src.data.datasets import SAMPLE_PHOTOS

    assert qs.SAMPLE_PHOTO_NAMES == SAMPLE_PHOTOS
    assert set(qs.EVAL_PHOTOS) <= set(SAMPLE_PHOTOS) and qs.STRIP_PHOTO in qs.EVAL_PHOTOS


def test_targets_spread_over_the_range_on_a_log_scale():
    t = qs.spread_targets(0.1, 0.4)
    assert 0.1 < t[0] < t[1] < t[2] < 0.4
    assert t[1] == pytest.approx(0.2, abs=1e-4)                   # geometric middle
    with pytest.raises(SystemExit, match="does not fall"):
        qs.spread_targets(0.3, 0.3)


def test_targets_spread_over_the_union_of_the_beta_vq_bands():
    bands = {1.0: (0.02, 0.04), 2.0: (0.025, 0.05), 3.0: (0.03, 0.06)}
    t = qs.targets_over_bands(bands)
    assert t == qs.spread_targets(0.02, 0.06)
    assert t[0] < 0.025 and t[-1] > 0.05                  # only beta_vq 1 / 3 reach the ends
    with pytest.raises(SystemExit, match="leave a gap"):
        qs.targets_over_bands({1.0: (0.01, 0.012), 3.0: (0.05, 0.06)})


def test_image_strip_shows_original_lowest_and_highest_rate(tmp_path):
    pipe = qs.Pipeline(tmp_path, "cpu")
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "rd.csv").write_text("quality,bpp,PSNR\n0,0.5,25.0\n1,0.1,20.0\n2,0.3,23.0\n")
    pipe.eval_photos.mkdir()
    Image.new("RGB", (40, 30), (255, 0, 0)).save(pipe.eval_photos / f"{qs.STRIP_PHOTO}.png")
    for q, colour in ((0, (0, 0, 255)), (1, (0, 255, 0)), (2, (9, 9, 9))):
        d = tmp_path / "eval" / f"point_{q}" / "decoded"
        d.mkdir(parents=True)
        Image.new("RGB", (40, 30), colour).save(d / f"{qs.STRIP_PHOTO}.png")
    strip = Image.open(pipe.image_strip())
    assert strip.size[0] == 120
    row = strip.size[1] - 5
    # original | lowest rate (q1, 0.1 bpp) | highest rate (q0, 0.5 bpp)
    assert [strip.getpixel((x, row)) for x in (20, 60, 100)] == [(255, 0, 0), (0, 255, 0), (0, 0, 255)]


def test_training_runs_as_nproc_processes_that_split_the_batch(tmp_path, monkeypatch):
    calls = []
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    config = "config/quickstart/stage1_2.yaml"
    batch = int(load_config(qs.ROOT / config).dataset.batch_size)

    pipe = qs.Pipeline(tmp_path, "cpu", nproc=2)
    monkeypatch.setattr(pipe, "run", lambda cmd, env=None: calls.append((list(map(str, cmd)), env)))
    pipe.train(config, "model.x=1")
    cmd, env = calls.pop()
    assert cmd[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    assert f"dataset.batch_size={batch // 2}" in cmd and cmd[-1] == "model.x=1"   # the caller's options last
    assert env["OMP_NUM_THREADS"] == "1" and pipe.env["OMP_NUM_THREADS"] == "2"    # coding: 2 threads

    one = qs.Pipeline(tmp_path, "cpu", nproc=1)
    monkeypatch.setattr(one, "run", lambda cmd, env=None: calls.append((list(map(str, cmd)), env)))
    one.train(config)
    cmd, env = calls.pop()
    assert cmd[1] == "scripts/train.py" and not any(c.startswith("dataset.batch_size") for c in cmd)

    odd = qs.Pipeline(tmp_path, "cpu", nproc=3)
    with pytest.raises(SystemExit, match="does not split"):
        odd.train(config)
    with pytest.raises(SystemExit, match="at least 1"):
        qs.Pipeline(tmp_path, "cpu", nproc=0)


def fake_warmup_checkpoint(path, it=7):
    """A training checkpoint of the step-1-1 model (randomly initialised, seeded) -> its state dict."""
    from src.models.codec.loading import build_codec

    torch.manual_seed(0)
    sd = build_codec(qs.load_recipe(qs.WARMUP_CONFIG, [f"subnet.vq_model.ckpt_path={qs.SHIPPED_PRIOR}"])).state_dict()
    torch.save({"comp_model": sd, "iter": it, "optimizers": {}}, path)
    return sd


BOUND = "entropy_model_z.likelihood_lower_bound.bound"      # a constant buffer: 1e-9, 0 in float16


def test_exported_warmup_installs_as_the_checkpoint_step_1_2_loads(tmp_path):
    """Learned parameters travel in float16; buffers (likelihood bounds, the scale table, the coder's
    tables) and their values are kept; the VQGAN is left to the prior."""
    from src.utils.checkpoint import load_file

    sd = fake_warmup_checkpoint(tmp_path / "train.pth.tar")
    qs.export_warmup(tmp_path / "train.pth.tar", tmp_path / "warmup.pth", qs.SHIPPED_PRIOR)
    shipped = torch.load(tmp_path / "warmup.pth", weights_only=True)["comp_model"]
    assert not any(k.startswith("vq_model.") for k in shipped) and any(k.startswith("vq_model.") for k in sd)
    weight = next(k for k in shipped if k.endswith(".weight"))
    assert shipped[weight].dtype == torch.float16
    assert shipped[BOUND].dtype == torch.float32 and shipped[BOUND].item() == pytest.approx(1e-9)
    assert torch.equal(shipped["entropy_model_y.scale_table"], sd["entropy_model_y.scale_table"])

    dst = tmp_path / "ckpt" / "stage1_1" / "model" / "iter.pth.tar"
    assert qs.install_warmup(tmp_path / "warmup.pth", qs.SHIPPED_PRIOR, dst) == 7
    installed = load_file(dst)["comp_model"]
    assert torch.equal(installed[weight], sd[weight].half().float())
    assert all(torch.equal(installed[k], sd[k]) for k in shipped if shipped[k].dtype != torch.float16)


def test_a_warmup_is_refused_for_another_recipe_or_prior(tmp_path, monkeypatch):
    fake_warmup_checkpoint(tmp_path / "train.pth.tar")
    prior = qs.SHIPPED_PRIOR
    qs.export_warmup(tmp_path / "train.pth.tar", tmp_path / "warmup.pth", prior)
    dst = tmp_path / "installed.pth.tar"

    other = tmp_path / "other_prior.pth"
    other.write_bytes(prior.read_bytes() + b"\0")
    with pytest.raises(SystemExit, match="another VQGAN prior"):
        qs.install_warmup(tmp_path / "warmup.pth", other, dst)

    recipe = qs.load_recipe(qs.WARMUP_CONFIG)
    recipe.total_iter = recipe.total_iter + 1
    monkeypatch.setattr(qs, "load_recipe", lambda config: recipe)
    with pytest.raises(SystemExit, match="differing keys: total_iter.*--retrain_warmup"):
        qs.install_warmup(tmp_path / "warmup.pth", prior, dst)
    assert not dst.exists()


def test_shipped_warmup_matches_its_recipe_and_loads_strictly(tmp_path):
    """The shipped step 1-1 was trained from the current stage1_1.yaml on the shipped prior (a
    changed config is refused at install: re-export it with --retrain_warmup), is a small file,
    and fills the step-1-1 model exactly (the VQGAN coming from the prior), buffers included (a first
    export in float16 had turned the likelihood bound 1e-9 into 0, and the quickstart's estimated
    bpp into inf)."""
    from src.models.codec.loading import load_codec

    assert qs.SHIPPED_WARMUP.stat().st_size < 6_000_000
    dst = tmp_path / "installed.pth.tar"
    assert qs.install_warmup(qs.SHIPPED_WARMUP, qs.SHIPPED_PRIOR, dst) == qs.total_iter_of(qs.WARMUP_CONFIG)
    model, _ = load_codec(qs.ROOT / qs.WARMUP_CONFIG, dst, "cpu",
                          [f"subnet.vq_model.ckpt_path={qs.SHIPPED_PRIOR}"])          # strict
    # the entropy models' constant buffers (likelihood bounds among them) are those of a new model
    from src.models.codec.convert import CONSTANT_BUFFER_SUFFIXES
    from src.models.codec.loading import build_codec

    fresh = build_codec(qs.load_recipe(qs.WARMUP_CONFIG, [f"subnet.vq_model.ckpt_path={qs.SHIPPED_PRIOR}"]))
    constants = {k: v for k, v in fresh.state_dict().items() if k.endswith(CONSTANT_BUFFER_SUFFIXES)}
    assert BOUND in constants
    assert all(torch.equal(model.state_dict()[k], v) for k, v in constants.items()), \
        {k: model.state_dict()[k] for k in constants}


def test_retrained_warmup_is_exported_then_installed_like_the_shipped_one(tmp_path, monkeypatch):
    """--retrain_warmup: step 1-1 trains into warmup_checkpoint/, is exported next to the work dir's
    other outputs and installed where step 1-2 loads it; without it, the shipped file is installed."""
    from src.utils.checkpoint import checkpoint_path, load_file

    it = qs.total_iter_of(qs.WARMUP_CONFIG)
    pipe = qs.Pipeline(tmp_path, "cpu", retrain_warmup=True)
    trained = []

    def train(config, *extra):                  # what scripts/train.py would leave behind
        trained.append((config, extra))
        path = checkpoint_path(tmp_path / "warmup_checkpoint", "stage1_1", it)
        path.parent.mkdir(parents=True)
        fake_warmup_checkpoint(path, it=it)

    monkeypatch.setattr(pipe, "train", train)
    pipe.warmup_step()
    assert trained == [(qs.WARMUP_CONFIG, (f"ckpt_dir={tmp_path / 'warmup_checkpoint'}",))]
    assert pipe.warmup == tmp_path / "quickstart_dcvic_warmup.pth" and pipe.warmup.is_file()
    installed = checkpoint_path(pipe.ckpt, "stage1_1", it)
    assert load_file(installed)["iter"] == it

    shipped = qs.Pipeline(tmp_path / "other", "cpu")
    assert shipped.warmup == qs.SHIPPED_WARMUP and qs.Pipeline(tmp_path, "cpu", retrain_prior=True).retrain_warmup
    monkeypatch.setattr(shipped, "train", lambda *a: pytest.fail("the shipped step 1-1 is not trained again"))
    shipped.warmup_step()
    assert checkpoint_path(shipped.ckpt, "stage1_1", it).is_file()
