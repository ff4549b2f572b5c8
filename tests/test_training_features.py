"""Training features of the tokenizer recipes at toy width on CPU: the cosine schedule, gradient
accumulation, resuming at a given iteration, the discriminator's schedule, metrics averaged over ranks."""
import math
import os
import warnings

import pytest
import torch
import torch.multiprocessing as mp

import src.models  # noqa: F401  (fills MODELS / SUBNETS)
from src.trainer.optim import WarmupCosine, build_scheduler
from src.trainer.vqgan_trainer import VQGANTrainer
from src.utils import dist as tdist
from src.utils.checkpoint import list_checkpoints
from tests.test_tokenizer_training import recording, small_photos, tiny_cfg  # noqa: F401  (fixture)


def lrs(sched_cfg, n, lr=1.0):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = build_scheduler(opt, sched_cfg)
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_cosine_schedule_values():
    got = lrs({"type": "CosineLR", "total_iters": 10, "warmup_iters": 2, "warmup_factor": 0.0,
               "min_factor": 0.1}, 14, lr=2.0)
    assert got[0] == 0.0 and got[1] == pytest.approx(1.0)              # linear warm-up 0 -> 2
    assert got[2] == pytest.approx(2.0)                                 # peak right after the warm-up
    # half-way through the decay (it 6 of 2..10): the mid-point of 2.0 and 0.2
    assert got[6] == pytest.approx(0.2 + 1.8 * 0.5)
    assert got[4] == pytest.approx(0.2 + 1.8 * 0.5 * (1 + math.cos(math.pi * 2 / 8)))
    assert got[10:] == pytest.approx([0.2] * 4)                         # held at min_factor after total_iters
    assert all(a >= b for a, b in zip(got[2:], got[3:]))                # monotone decay
    assert WarmupCosine(100)(0) == 1.0 and WarmupCosine(100)(100) == 0.0


def test_cosine_schedule_rejects_bad_sections():
    with pytest.raises(KeyError, match="total_iters"):
        lrs({"type": "CosineLR", "warmup_iters": 2}, 1)
    with pytest.raises(ValueError, match="must exceed warmup_iters"):
        lrs({"type": "CosineLR", "total_iters": 5, "warmup_iters": 5}, 1)
    with pytest.raises(KeyError, match="milestones"):
        lrs({"type": "CosineLR", "total_iters": 5, "milestones": [2]}, 1)


SGD = ["optim.g_optimizer={type: SGD, lr: 0.5}", "trainer.disc_start=1000", "trainer.ema_decay=null"]


def test_gradient_accumulation_equals_a_larger_batch(tmp_path, small_photos):
    """Two micro-batches of 2 step the generator exactly as one batch of 4 (plain SGD: the update
    is the gradient itself)."""
    torch.manual_seed(0)
    images = torch.rand(4, 3, 32, 32) * 2 - 1
    big = VQGANTrainer(tiny_cfg("vqgan", tmp_path, small_photos, *SGD), exp_name="big", device="cpu")
    acc = VQGANTrainer(tiny_cfg("vqgan", tmp_path, small_photos, *SGD, "+grad_accum_steps=2"),
                       exp_name="acc", device="cpu")
    assert acc.accum_steps == 2
    acc.model.load_state_dict(big.model.state_dict())
    before = {k: v.clone() for k, v in big.model.state_dict().items()}
    big.model.train(), acc.model.train()
    big.train_step({"image": images}, 0)
    for acc._micro, part in enumerate((images[:2], images[2:])):
        acc.train_step({"image": part}, 0)
    changed = 0
    for name, p in big.model.named_parameters():
        q = dict(acc.model.named_parameters())[name]
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6, msg=name)
        changed += not torch.equal(p, before[name])
    assert changed > 10                                                   # the step did move the weights


def test_gradient_accumulation_in_the_loop(tmp_path, small_photos):
    """The loop feeds N batches per iteration, steps once per iteration and logs their mean."""
    cfg = tiny_cfg("vqgan", tmp_path, small_photos, *SGD, "+grad_accum_steps=3", "total_iter=2", "save_step=2")
    trainer = VQGANTrainer(cfg, exp_name="acc_loop", device="cpu")
    logs = recording(trainer)
    steps = []
    trainer.optimizers["g"].register_step_post_hook(lambda *a: steps.append(1))
    assert trainer.train() == 2
    assert len(logs) == 6 and len(steps) == 2


def test_load_from_resumes_bit_identically(tmp_path, small_photos):
    """A run resumed with --load_from 2 (EMA, D, optimizers, RNG, data position) ends where an
    uninterrupted run ends, bit for bit, though a later checkpoint (4) exists."""
    opts = ["dataset.train_dataset.image_size=32", "total_iter=4", "save_step=2", "keep_step=[2, 4]",
            "trainer.disc_start=1", "trainer.ema_decay=0.5", "optim.d_scheduler={type: LinearWarmupScheduler, "
            "warmup_iters: 3}"]
    straight = VQGANTrainer(tiny_cfg("vqgan", tmp_path, small_photos, *opts), exp_name="run", device="cpu")
    assert straight.train() == 4
    assert sorted(list_checkpoints(tmp_path, "run")) == [2, 4]
    want = {n: {k: v.clone() for k, v in m.state_dict().items()} for n, m in straight.checkpoint_modules().items()}
    want_d_lr = straight.optimizers["d"].param_groups[0]["lr"]

    resumed = VQGANTrainer(tiny_cfg("vqgan", tmp_path, small_photos, *opts), exp_name="run", device="cpu",
                           load_from=2)
    assert resumed.start_iter == 2
    assert resumed.train() == 4
    got = {n: m.state_dict() for n, m in resumed.checkpoint_modules().items()}
    assert set(got) == {"comp_model", "discriminator", "ema_model"}
    for name in want:
        assert all(torch.equal(want[name][k], got[name][k]) for k in want[name]), name
    assert resumed.optimizers["d"].param_groups[0]["lr"] == want_d_lr

    with pytest.raises(FileNotFoundError, match=r"no checkpoint of iteration 3 .*iterations there: 2, 4"):
        VQGANTrainer(tiny_cfg("vqgan", tmp_path, small_photos, *opts), exp_name="run", device="cpu", load_from=3)


def test_discriminator_schedule_starts_at_disc_start_without_order_warning(tmp_path, small_photos):
    """D's warm-up begins when D does; torch's 'lr_scheduler.step() before optimizer.step()' never fires."""
    cfg = tiny_cfg("vqgan", tmp_path, small_photos, "total_iter=5", "save_step=100", "trainer.disc_start=2",
                   "optim.d_scheduler={type: LinearWarmupScheduler, warmup_iters: 2, warmup_factor: 0.0}",
                   "optim.d_optimizer.lr=0.1")
    trainer = VQGANTrainer(cfg, exp_name="dsched", device="cpu")
    d_lrs = []
    step = trainer.train_step
    trainer.train_step = lambda batch, it: d_lrs.append(trainer.optimizers["d"].param_groups[0]["lr"]) or step(batch, it)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.train()
    assert not [w for w in caught if "lr_scheduler.step()" in str(w.message)]
    # iterations 0, 1: D off, its schedule waits at factor 0; 2: D's first step at warm-up factor 0;
    # 3: half-way; 4: full lr
    assert d_lrs == pytest.approx([0.0, 0.0, 0.0, 0.05, 0.1])


def _reduce_worker(rank, world, init_file, out):
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        logs = {"loss": float(rank + 1), "psnr": 10.0 * rank}
        if rank == 1:
            logs["gan"] = 4.0             # a term only this rank logged
        out[rank] = tdist.all_reduce_scalars(logs)
    finally:
        torch.distributed.destroy_process_group()


def test_all_reduce_scalars_two_gloo_ranks(tmp_path):
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_reduce_worker, args=(2, str(tmp_path / "init"), out), nprocs=2, join=True)
        results = dict(out)
    for rank in (0, 1):
        assert results[rank] == {"loss": 1.5, "psnr": 5.0, "gan": 4.0}


def test_all_reduce_scalars_one_process_is_identity():
    assert tdist.all_reduce_scalars({"a": 1.0, "n": 3, "name": "x"}) == {"a": 1.0, "n": 3.0}


# ---------------------------------------------------------------- fail fast: teachers before the model
@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """An empty Hugging Face cache and no hub: a timm teacher's weights are missing."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)


def refuse_builds(monkeypatch):
    from src.utils.registry import MODELS

    def no_build(*a, **k):
        raise AssertionError("the model was built before the teacher was checked")

    monkeypatch.setattr(MODELS, "build", no_build)


def test_vqkd_trainer_refuses_a_missing_teacher_before_building(tmp_path, small_photos, offline_hub, monkeypatch):
    from src.utils.config import load_config
    from src.zoo.tokenizers.teachers import TeacherUnavailable
    from src.zoo.trainers import FeatureTokenizerTrainer

    cfg = load_config("config/tokenizer/vqkd/quickstart_vqkd.yaml",
                      [f"ckpt_dir={tmp_path}", f"dataset.train_dataset.root_dir={small_photos}", "eval_step=null",
                       "model.teacher={name: clip_vit_b16, weights: null}", "model.encoder.dim=768",
                       "model.encoder.depth=12", "model.encoder.num_heads=12"])   # a ViT-B student
    refuse_builds(monkeypatch)
    with pytest.raises(TeacherUnavailable) as e:
        FeatureTokenizerTrainer(cfg, exp_name="vqkd", device="cpu", auto_resume=False)
    text = str(e.value)
    assert "model.teacher" in text and "vit_base_patch16_clip_224.openai" in text
    assert str(tmp_path / "hf" / "hub") in text and "before building the model" in text


def test_cluster_tokenizer_inside_a_checkpoint_needs_its_teacher_to_load(tmp_path, offline_hub, monkeypatch):
    """A pixel decoder on a Cluster tokenizer encodes with the teacher: loading it checks first; a
    VQ-KD decodes without one and is not refused."""
    from src.utils.preflight import needed_teachers
    from src.zoo.tokenizers.teachers import TeacherUnavailable
    from src.zoo.tools import load_tokenizer

    clip = {"name": "clip_vit_b16", "weights": None}
    cluster = {"type": "ClusterTokenizer", "teacher": clip, "codebook_size": 8}
    decoder = {"type": "PixelDecoder", "tokenizer": cluster, "ddconfig": {}}
    assert [k for k, _ in needed_teachers(decoder, train=True)] == ["model.tokenizer.teacher"]
    vqkd = {"type": "VQKD", "teacher": clip}
    assert [k for k, _ in needed_teachers(vqkd, train=True)] == ["model.teacher"]
    assert list(needed_teachers(vqkd, train=False)) == []
    assert list(needed_teachers({"type": "PixelDecoder", "tokenizer": vqkd}, train=True)) == []

    path = tmp_path / "decoder.pth.tar"
    torch.save({"comp_model": {}, "config": {"model": decoder}}, path)
    refuse_builds(monkeypatch)
    with pytest.raises(TeacherUnavailable, match="model.tokenizer.teacher"):
        load_tokenizer(str(path))


# ---------------------------------------------------------------- FSDP beside DDP (2 gloo ranks on the CPU)
VQGAN_2RANK = ["dataset.train_dataset.image_size=32", "trainer.disc_start=1", "trainer.ema_decay=0.5"]


def _torchrun(tmp_path, data, port, *opts, config="config/tokenizer/quickstart/quickstart_vqgan.yaml",
              toy=VQGAN_2RANK):
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}",
           "scripts/train.py", config, "-d", "cpu", "--opt", f"ckpt_dir={tmp_path}",
           f"dataset.train_dataset.root_dir={data}", "log_step=1", *toy, *opts]
    env = dict(os.environ, WANDB_MODE="disabled", OMP_NUM_THREADS="1")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    res = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=400)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def test_fsdp_on_two_gloo_ranks_matches_ddp(tmp_path, small_photos):
    """Two steps of G and D with EMA and the adaptive GAN weight, then validation: the FSDP run's
    checkpoint (whole tensors) equals the DDP run's; the FSDP run resumes from its own checkpoint."""
    common = ["total_iter=2", "save_step=2", "eval_step=2", f"dataset.eval_dataset.root_dir={small_photos}"]
    ddp = _torchrun(tmp_path / "ddp", small_photos, 29741, *common)
    fsdp = _torchrun(tmp_path / "fsdp", small_photos, 29742, *common, "+parallel=fsdp")
    assert "world size 2" in fsdp.stderr and "validation @2" in fsdp.stderr
    a = torch.load(list_checkpoints(tmp_path / "ddp", "quickstart_vqgan")[2], map_location="cpu", weights_only=False)
    b = torch.load(list_checkpoints(tmp_path / "fsdp", "quickstart_vqgan")[2], map_location="cpu", weights_only=False)
    for name in ("comp_model", "discriminator", "ema_model"):
        assert a[name].keys() == b[name].keys(), name
        for k in a[name]:
            assert type(b[name][k]) is torch.Tensor and b[name][k].shape == a[name][k].shape, k
            torch.testing.assert_close(b[name][k], a[name][k], rtol=1e-4, atol=1e-5, msg=f"{name}.{k}")
    assert set(b["optimizers"]) == {"g", "d"}
    resumed = _torchrun(tmp_path / "fsdp", small_photos, 29743, *common[1:], "total_iter=3", "+parallel=fsdp")
    assert "start iter 2" in resumed.stderr
    assert sorted(list_checkpoints(tmp_path / "fsdp", "quickstart_vqgan")) == [3]


def test_fsdp_shards_transformer_blocks_and_matches_ddp(tmp_path):
    """The AR model under FSDP (each Llama block its own unit), validation on both ranks."""
    from src.trainer.sharding import units
    from src.zoo.ar.llama import LlamaC2I
    from tests.test_tokenizer_zoo import write_tokens

    model = LlamaC2I(vocab_size=64, seq_len=64, num_classes=2, dim=32, depth=2, num_heads=4, multiple_of=16)
    assert sum(u in set(model.layers) for u in units(model)) == 2 and model.layers not in set(units(model))
    tokens = write_tokens(tmp_path / "tokens")
    toy = ["model.num_classes=2", f"dataset.eval_dataset.root_dir={tokens}", "validation.num_samples=0",
           "total_iter=2", "save_step=2", "eval_step=2"]
    runs = {}
    for port, name, extra in ((29744, "ddp", []), (29745, "fsdp", ["+parallel=fsdp"])):
        res = _torchrun(tmp_path / name, tokens, port, *extra, config="config/tokenizer/ar/quickstart_ar.yaml",
                        toy=toy)
        assert "validation @2" in res.stderr
        runs[name] = torch.load(list_checkpoints(tmp_path / name, "quickstart_ar")[2], map_location="cpu",
                                weights_only=False)["comp_model"]
    for k, v in runs["ddp"].items():
        torch.testing.assert_close(runs["fsdp"][k], v, rtol=1e-4, atol=1e-5, msg=k)


# ---------------------------------------------------------------- recipes of the seed by default
def test_configs_follow_the_seed_recipes():
    from src.utils.config import load_config

    def cfg(name):
        return load_config(f"config/tokenizer/{name}.yaml")

    for name in ("vqgan/vqgan_1024", "vqgan/vqgan_8192", "vqgan/vqgan_8192_dd2_aglwg075",
                 "cvqvae/cvqvae_8192_dd2_aglwg075", "fsq/fsq_8000", "decoder/vqgan_8192_dd2_aglwg075"):
        c = cfg(name)   # magic-research/vector_quantization configs/vqgan/runner.py
        assert (c.optim.g_optimizer.lr, c.optim.d_optimizer.lr, c.trainer.disc_start, c.total_iter) == \
            (5.4e-5, 4.32e-4, 0, 260000), name
    ldm = cfg("vqgan/vqgan_f8_n256")   # latent-diffusion's vq-f8-n256 schedule
    assert (ldm.trainer.disc_start, ldm.optim.d_optimizer.lr, ldm.loss.gan_gain) == (250001, 5.4e-5, 0.75)
    llamagen = cfg("decoder/llamagen_8192")   # configs/llamagen/vqgan.py
    assert (llamagen.loss.rec_loss, llamagen.loss.adaptive_weight, llamagen.loss.gan_gain * llamagen.loss.disc_factor,
            llamagen.trainer.disc_start, llamagen.total_iter) == ("mse", False, 0.5, 20000, 400000)
    assert llamagen.optim.g_optimizer.lr == llamagen.optim.d_optimizer.lr == 1e-4
    assert llamagen.model.ddconfig.attn_resolutions == [] and llamagen.discriminator.n_layers == 3
    vqkd = cfg("vqkd/vqkd_clip_8192").optim   # configs/vqkd/runner.py
    assert vqkd.g_scheduler.to_dict() == {"type": "CosineLR", "total_iters": 250000, "warmup_iters": 25000,
                                          "warmup_factor": 0.0, "min_factor": 0.05}
    assert vqkd.g_optimizer.lr * vqkd.g_scheduler.min_factor == pytest.approx(1e-5)
    cluster = cfg("cluster/cluster_clip_8192")   # configs/cluster/runner.py
    assert (cluster.model.codebook, cluster.optim.g_optimizer.lr, cluster.total_iter) == ("gradient", 5.4e-5, 100000)
    ar = cfg("alitok/c2i_llama_b_alitok").model
    assert (ar.dim, ar.depth, ar.rope) == (768, 24, "1d")
    assert cfg("ar/c2i_llama_b").model.rope == cfg("ar/c2i_llama_l").model.rope == "2d"
    llama = cfg("ar/c2i_llama_b")   # configs/llamagen/ar.py on configs/ar/runner.py
    assert llama.optim.g_scheduler.to_dict() == {"type": "CosineLR", "total_iters": 250000}
    assert (llama.optim.g_optimizer.eps, llama.optim.g_optimizer.weight_decay, llama.total_iter) == (1e-6, 0.05, 250000)


@pytest.mark.filterwarnings("ignore:Matrix is singular")   # 2 images, 8-d stand-in features
def test_validation_adds_lpips_and_rfid_when_the_networks_load(tmp_path, small_photos, monkeypatch):
    """Stand-in networks (a per-image mean difference, random-projection features) take the place of
    LPIPS and Inception, whose weights are not downloadable here; missing weights skip the metric."""
    import numpy as np

    import src.metrics as metrics_pkg
    from src.metrics import MetricUnavailable

    proj = np.random.default_rng(0).normal(size=(3 * 32 * 32, 8))

    class FakeLPIPS:
        def __init__(self, device):
            pass

        def __call__(self, a, b):
            return (a - b).abs().mean()

    class FakeInception:
        def __init__(self, device):
            pass

        def __call__(self, img):
            small = torch.nn.functional.interpolate(img.float(), size=(32, 32), mode="area")
            return small.reshape(len(small), -1).numpy() @ proj

    monkeypatch.setattr(metrics_pkg, "LPIPSMetric", FakeLPIPS)
    monkeypatch.setattr(metrics_pkg, "InceptionFeatures", FakeInception)
    cfg = tiny_cfg("vqgan", tmp_path, small_photos, "loss.perceptual_loss=null", "eval_step=1")
    trainer = VQGANTrainer(cfg, exp_name="val", device="cpu", dry_run=True)
    trainer.model.eval()
    with torch.no_grad():
        got = trainer.validate(0)
    assert 0 < got["lpips"] < 1 and got["rfid"] > 0

    def missing(device):
        raise MetricUnavailable("weights missing")

    monkeypatch.setattr(metrics_pkg, "InceptionFeatures", missing)
    trainer = VQGANTrainer(cfg, exp_name="val2", device="cpu", dry_run=True)
    trainer.model.eval()
    with torch.no_grad():
        got = trainer.validate(0)
    assert "lpips" in got and "rfid" not in got


def test_script_flags_become_config_overrides(tmp_path, capsys):
    import importlib.util

    def script(name):
        spec = importlib.util.spec_from_file_location(f"s_{name}", f"scripts/{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    train = script("train")
    args = train.parse_args(["cfg.yaml", "--autocast", "--grad_accum", "4", "--opt", "a=1"])
    assert train.flag_overrides(args) == ["+amp=true", "+amp_dtype=bf16", "+grad_accum_steps=4", "a=1"]
    assert train.flag_overrides(train.parse_args(["cfg.yaml", "--autocast", "fp16"]))[1] == "+amp_dtype=fp16"
    assert train.main(["cfg.yaml", "--load_from", "12x"]) == 2 and "not an iteration" in capsys.readouterr().err
    one_d = script("train_1d_tokenizer")
    args = one_d.parse_args(["--grad_accum", "2", "--load_from", "500"])
    assert "+grad_accum_steps=2" in one_d.overrides(args) and args.load_from == 500


def test_2d_rope_by_value_and_relative_positions():
    from src.zoo.ar.llama import LlamaC2I, apply_rope, rope_tables_2d

    cos, sin = rope_tables_2d(16, 8, base=100.0)          # 4 x 4 grid, head size 8: 2 row pairs, 2 column pairs
    angles = torch.atan2(sin, cos)
    inv = torch.tensor([1.0, 100.0 ** -0.5])
    assert torch.equal(cos[0], torch.ones(4)) and torch.equal(sin[0], torch.zeros(4))   # the class token
    for k in range(15):                                   # input k + 1 holds token k at (k // 4, k % 4)
        want = torch.cat([(k // 4) * inv, (k % 4) * inv])
        torch.testing.assert_close(torch.cos(angles[k + 1]), torch.cos(want))
        torch.testing.assert_close(torch.sin(angles[k + 1]), torch.sin(want))

    torch.manual_seed(0)
    q, k = torch.randn(2, 1, 1, 1, 8).unbind(0)

    def score(a, b):   # q at token a, k at token b (grid positions), after the rotation
        qa = apply_rope(q, cos[a + 1:a + 2], sin[a + 1:a + 2])
        kb = apply_rope(k, cos[b + 1:b + 2], sin[b + 1:b + 2])
        return (qa * kb).sum().item()

    # tokens 3 (0,3) and 4 (1,0) have the 2D offset of 7 (1,3) and 8 (2,0): equal scores; tokens 8 (2,0)
    # and 9 (2,1) are as close in raster order but in another 2D offset: a different score
    assert score(3, 4) == pytest.approx(score(7, 8), abs=1e-5)
    assert abs(score(3, 4) - score(8, 9)) > 1e-3
    with pytest.raises(ValueError, match="square"):
        rope_tables_2d(273, 64)

    model = LlamaC2I(vocab_size=20, seq_len=16, num_classes=2, dim=32, depth=2, num_heads=2, multiple_of=16,
                     rope="2d").eval()
    tokens, labels = torch.randint(0, 20, (1, 16)), torch.tensor([1])
    with torch.no_grad():
        full = model(tokens, labels)
        cache = model.new_cache()
        steps = [model.run(model.cls_embed(labels).unsqueeze(1), 0, cache)]
        for p in range(1, 16):                            # one token at a time through the KV cache
            steps.append(model.run(model.tok_embed(tokens[:, p - 1:p]), p, cache))
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-4, atol=1e-5)


def test_cluster_gradient_codebook_trains_by_adam_and_reanchors(tmp_path, sample_dir):
    """The seed's Cluster: an optimiser steps the codes on the codebook loss (mean ||e - sg(f)||^2
    of unit features), dead codes jump to features; the EMA variant stays gradient-free."""
    import src.zoo
    from src.trainer import build_trainer
    from src.utils.config import load_config
    from src.zoo.tokenizers import ClusterTokenizer

    src.zoo.register()   # FeatureTokenizerTrainer

    cfg = load_config("config/tokenizer/cluster/quickstart_cluster.yaml", [
        f"ckpt_dir={tmp_path}", f"dataset.train_dataset.root_dir={sample_dir}", "dataset.train_dataset.sample_photos=false",
        "eval_step=null", "total_iter=3", "save_step=3", "log_step=1"])
    assert cfg.model.codebook == "gradient"
    trainer = build_trainer(cfg, exp_name="cluster_grad", device="cpu", auto_resume=False)
    assert set(trainer.optimizers) == {"g"}
    before = trainer.model.quantize.embedding.weight.detach().clone()
    logs = recording(trainer)
    assert trainer.train() == 3
    after = trainer.model.quantize.embedding.weight.detach()
    assert not torch.equal(before, after)
    assert all(math.isfinite(v) for row in logs for v in row.values()) and logs[-1]["quant"] > 0
    # the codebook loss pulls the assigned code towards the unit feature: one plain step of it by hand
    teacher = dict(name="tiny_vit", dim=24, depth=1, num_heads=2, seed=0)
    m = ClusterTokenizer(teacher=teacher, image_size=64, codebook_size=8, codebook="gradient", reanchor=False)
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    out = m(x)
    out["quant"].loss.backward()
    grad = m.quantize.embedding.weight.grad
    f = out["target"].permute(0, 2, 3, 1).reshape(-1, 24)
    idx = out["quant"].indices.reshape(-1)
    e = m.quantize.embedding.weight.detach()
    want = torch.zeros_like(e).index_add_(0, idx, 2 * (e[idx] - f) / f.numel())
    torch.testing.assert_close(grad, want)
    with pytest.raises(ValueError, match="codebook"):
        ClusterTokenizer(teacher=teacher, image_size=64, codebook_size=8, codebook="kmeans")


def test_alternating_generator_and_discriminator_steps(tmp_path, small_photos):
    """alternate_gd: before disc_start G every iteration; from it D, G, D, ... one optimizer per
    iteration; each schedule counts its own optimizer's steps, without torch's order warning."""
    cfg = tiny_cfg("vqgan", tmp_path, small_photos, "total_iter=5", "save_step=100", "trainer.disc_start=1",
                   "+trainer.alternate_gd=true", "trainer.ema_decay=0.5",
                   "optim.g_scheduler={type: LinearWarmupScheduler, warmup_iters: 4}",
                   "optim.d_scheduler={type: LinearWarmupScheduler, warmup_iters: 4}")
    trainer = VQGANTrainer(cfg, exp_name="alt", device="cpu")
    steps = {"g": [], "d": []}
    current = {}
    step = trainer.train_step
    trainer.train_step = lambda batch, it: current.update(it=it) or step(batch, it)
    for name in steps:
        trainer.optimizers[name].register_step_post_hook(lambda *a, name=name: steps[name].append(current["it"]))
    logs = recording(trainer)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.train()
    assert not [w for w in caught if "lr_scheduler.step()" in str(w.message)]
    assert steps == {"g": [0, 2, 4], "d": [1, 3]}
    assert ["gan" in row for row in logs] == [False, False, True, False, True]
    assert trainer.schedulers["g"].last_epoch == 3 and trainer.schedulers["d"].last_epoch == 2
