"""The two-stage 1D tokenizer: causality of the stage-1 decoder, stage 2 on a frozen encoder,
the training flags, the ConvNeXt perceptual loss (tiny, CPU, random backbones: no download)."""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import src.zoo.trainers  # noqa: F401  (registers OneDTokenizerTrainer)
from src.data.datasets import ImageDataset
from src.losses import ConvNeXtPerceptualLoss
from src.models.vq.quantizers import ClusteredVectorQuantizer
from src.trainer import build_trainer
from src.utils.checkpoint import latest_checkpoint, load_file
from src.utils.config import load_config
from src.utils.image_io import save_rgb
from src.zoo.tokenizers import OneDTokenizer
from src.zoo.trainers import decode_tokens

ROOT = Path(__file__).resolve().parents[1]
STAGE1 = ROOT / "config" / "tokenizer" / "alitok" / "quickstart_stage1.yaml"
STAGE2 = ROOT / "config" / "tokenizer" / "alitok" / "quickstart_stage2.yaml"
TINY = dict(image_size=32, patch_size=8, num_prefix_tokens=3, codebook_size=32, code_dim=8,
            encoder=dict(dim=32, depth=1, num_heads=2), decoder=dict(dim=32, depth=2, num_heads=2))


def tiny_model(**kw) -> OneDTokenizer:
    torch.manual_seed(0)
    model = OneDTokenizer(**{**TINY, **kw}).eval()
    with torch.no_grad():  # codes and outputs larger than at init, so differences are clear
        model.quantize.embedding.weight.normal_()
        model.decoder.to_pixels.weight.mul_(50)
    return model


def patches(images: torch.Tensor, p: int = 8) -> torch.Tensor:
    """(B, 3, H, W) -> (B, number of patches, 3*p*p) in raster order."""
    b, c, h, w = images.shape
    return images.view(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // p) * (w // p), -1)


# ------------------------------------------------------------------------------------ model
def test_causal_decoder_output_at_t_ignores_later_tokens():
    causal, bidirectional = tiny_model(), tiny_model(causal_decoder=False)
    prefix, n = 3, causal.num_tokens
    assert n == prefix + 16
    tokens = torch.randint(0, 32, (2, n), generator=torch.Generator().manual_seed(1))
    for t in (prefix, prefix + 5, n - 2):  # change every token after t
        later = tokens.clone()
        later[:, t + 1:] = (later[:, t + 1:] + 1 + torch.arange(n - t - 1)) % 32
        with torch.no_grad():
            a, b = patches(causal.decode_indices(tokens)), patches(causal.decode_indices(later))
            c, d = patches(bidirectional.decode_indices(tokens)), patches(bidirectional.decode_indices(later))
        upto = t - prefix + 1  # patches 0 .. t - prefix are decoded from tokens <= t
        assert torch.equal(a[:, :upto], b[:, :upto]), t
        assert (a[:, upto:] - b[:, upto:]).abs().amax() > 1e-5, t
        assert (c[:, :upto] - d[:, :upto]).abs().amax() > 1e-5, t  # the bidirectional decoder looks ahead
    changed_prefix = tokens.clone()
    changed_prefix[:, 0] = (changed_prefix[:, 0] + 1) % 32
    with torch.no_grad():
        diff = patches(causal.decode_indices(tokens)) - patches(causal.decode_indices(changed_prefix))
    assert (diff.abs().amax(-1) > 1e-5).all()  # every patch sees the prefix tokens


def test_encode_decode_matches_forward_and_size_is_checked():
    model = tiny_model()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        out = model(x)
        z, idx = model.encode(x)
        assert idx.shape == (2, model.num_tokens) and z.shape == (2, 8, model.num_tokens)
        # equal up to the straight-through estimator's rounding (z + (e - z) is not exactly e)
        assert torch.allclose(model.decode_indices(idx), out["x_hat"], atol=1e-5)
        assert torch.equal(decode_tokens(model, idx), model.decode_indices(idx))
    assert out["x_hat"].abs().max() <= 1
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        q = model(x)["quant"]
    assert q.quantized.dtype == torch.float32 and q.loss.dtype == torch.float32  # code search in float32
    with pytest.raises(ValueError, match=r"32x32 images into 19 tokens; got \(48, 32\)"):
        model(torch.zeros(1, 3, 48, 32))
    with pytest.raises(ValueError, match=r"expected \(B, 19\)"):
        model.decode_indices(torch.zeros(1, 18, dtype=torch.long))


def test_frozen_stage_keeps_encoder_and_codebook_fixed():
    model = tiny_model(freeze_encoder=True).train()
    assert not model.encoder.training and not model.quantize.training and model.decoder.training
    frozen = {k: v.clone() for k, v in model.state_dict().items() if k.startswith(("encoder.", "quantize."))}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("decoder.") for n in trainable)
    model(torch.rand(4, 3, 32, 32) * 2 - 1)["x_hat"].mean().backward()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in frozen.items())


@pytest.mark.parametrize("reanchor", [True, False])
def test_clustering_switch_of_the_codebook(reanchor):
    torch.manual_seed(0)
    q = ClusteredVectorQuantizer(16, 4, distance="l2", reanchor=reanchor).train()
    before = q.embedding.weight.detach().clone()
    q(torch.randn(2, 4, 10) + 3.0)  # far from every code: all but a few codes are dead
    moved = (q.embedding.weight - before).abs().amax(1) > 0.1
    assert moved.sum().item() >= 12 if reanchor else not moved.any()
    assert (q.embed_prob.sum() > 0) == reanchor


# ------------------------------------------------------------------------------------ losses
def test_convnext_perceptual_loss():
    loss = ConvNeXtPerceptualLoss(loss_weight=0.5, model="convnext_tiny", pretrained=False, resize=32)
    x = torch.rand(2, 3, 40, 40) * 2 - 1
    pred = (x.flip(-1) * 0.5).requires_grad_()
    value = loss(x, pred)
    assert loss(x, x).item() == 0.0 and value.item() > 0
    with torch.no_grad():
        expected = 0.5 * torch.mean((loss.logits(pred) - loss.logits(x)) ** 2)
    assert torch.allclose(value, expected)
    value.backward()
    assert pred.grad.abs().sum() > 0 and all(p.grad is None for p in loss.parameters())
    assert not loss.train().net.training


def test_convnext_weights_missing_message(monkeypatch):
    import torchvision.models

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(torchvision.models, "get_model", offline)
    with pytest.raises(RuntimeError, match=r"convnext_small-0c510722\.pth.*hub/checkpoints"):
        ConvNeXtPerceptualLoss()


# ---------------------------------------------------------------------------------- training
def build(config: Path, exp: str, ckpt_dir: Path, sample_dir: Path, *opts: str, resume: bool = False):
    cfg = load_config(config, [f"ckpt_dir={ckpt_dir}", "total_iter=3", "eval_step=3", "save_step=3",
                               "log_step=1", "eval_max_images=1", "optim.g_scheduler.warmup_iters=0",
                               f"dataset.train_dataset.root_dir={sample_dir}",
                               f"dataset.eval_dataset.root_dir={sample_dir}", *opts])
    return build_trainer(cfg, exp_name=exp, device="cpu", auto_resume=resume)


def run(trainer):
    logs, step = [], trainer.train_step
    trainer.train_step = lambda batch, it: logs.append(step(batch, it)) or logs[-1]
    trainer.train()
    return logs


@pytest.fixture(scope="module")
def stage1(tmp_path_factory, sample_dir):
    ckpt_dir = tmp_path_factory.mktemp("onedim")
    trainer = build(STAGE1, "quickstart_stage1", ckpt_dir, sample_dir, "loss.lpips_until=2", "trainer.disc_start=1")
    d_before = {k: v.clone() for k, v in trainer.discriminator.state_dict().items()}
    logs = run(trainer)
    d_after = trainer.discriminator.state_dict()
    return {"dir": ckpt_dir, "logs": logs, "d_changed": any(not torch.equal(d_before[k], d_after[k]) for k in d_before)}


def test_stage1_losses_follow_the_schedule(stage1):
    logs = stage1["logs"]
    assert len(logs) == 3 and all(math.isfinite(v) for log in logs for v in log.values())
    assert ["lpips" in log for log in logs] == [True, True, False]  # lpips_until=2
    assert all(log["perceptual"] > 0 and log["rec"] > 0 for log in logs)
    # disc_start=1 and alternate_gd: D alone at iteration 1, G (with its GAN term) alone at 2
    assert ["gan" in log for log in logs] == [False, False, True] and stage1["d_changed"]
    assert ["d_real" in log for log in logs] == [False, True, False]
    ckpt = load_file(latest_checkpoint(stage1["dir"], "quickstart_stage1"))
    assert ckpt["iter"] == 3 and ckpt["comp_model"]["decoder.start_tokens"].shape[0] == 1
    samples = list((stage1["dir"] / "quickstart_stage1").rglob("*.png"))
    assert samples  # validation reconstructions of the eval image, centre-cropped to 64 px


def test_stage2_trains_the_decoder_on_the_frozen_encoder(stage1, sample_dir):
    state1 = load_file(latest_checkpoint(stage1["dir"], "quickstart_stage1"))["comp_model"]
    trainer = build(STAGE2, "quickstart_stage2", stage1["dir"], sample_dir)
    loaded = trainer.model.state_dict()
    assert loaded["decoder.start_tokens"].shape[0] == 4  # new: its shape differs from stage 1's
    assert torch.equal(loaded["decoder.blocks.0.attn.qkv.weight"], state1["decoder.blocks.0.attn.qkv.weight"])
    logs = run(trainer)
    assert all(math.isfinite(v) for log in logs for v in log.values())
    state2 = trainer.model.state_dict()
    frozen = [k for k in state1 if k.startswith(("encoder.", "quantize."))]
    assert frozen and all(torch.equal(state2[k], state1[k]) for k in frozen)
    assert not torch.equal(state2["decoder.to_pixels.weight"], state1["decoder.to_pixels.weight"])
    assert not trainer.model.decoder.causal


def test_stage2_refuses_an_incompatible_stage1(stage1, sample_dir):
    with pytest.raises(RuntimeError, match="frozen stage-1 encoder/codebook"):
        build(STAGE2, "wrong_stage2", stage1["dir"], sample_dir, "model.code_dim=4")
    with pytest.raises(FileNotFoundError, match="no checkpoint of experiment 'nowhere'"):
        build(STAGE2, "lost_stage2", stage1["dir"], sample_dir, "load_checkpoint.exp=nowhere")


def test_restart_takes_the_new_learning_rate(tmp_path, sample_dir):
    run(build(STAGE1, "lr_run", tmp_path, sample_dir, "total_iter=2", "save_step=2"))
    trainer = build(STAGE1, "lr_run", tmp_path, sample_dir, "optim.g_optimizer.lr=3.0e-5",
                    "optim.d_optimizer.lr=3.0e-5", resume=True)
    assert trainer.start_iter == 2
    run(trainer)
    assert [g["lr"] for g in trainer.optimizers["g"].param_groups] == [3.0e-5]
    assert [g["lr"] for g in trainer.optimizers["d"].param_groups] == [3.0e-5]
    kept = build(STAGE1, "lr_run", tmp_path, sample_dir, "optim.g_optimizer.lr=1.0e-6",
                 "optim.reset_lr_on_resume=false", resume=True)
    assert kept.optimizers["g"].param_groups[0]["lr"] == 3.0e-5  # the saved one


def _script():
    spec = importlib.util.spec_from_file_location("train_1d_tokenizer", ROOT / "scripts" / "train_1d_tokenizer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_script_flags_become_config_values():
    script = _script()
    args = script.parse_args(["--root", "/data/imagenet/train", "--perceptual_weight", "0.2", "--lpips_weight",
                              "1.0", "--clustering_vq", "--disc_start", "0", "--lr", "2e-5"])
    cfg = load_config(ROOT / "config" / "tokenizer" / "alitok" / "alitok_stage1.yaml", script.overrides(args))
    assert cfg.dataset.train_dataset.root_dir == "/data/imagenet/train" and cfg.dataset.train_dataset.recursive
    assert cfg.loss.perceptual.loss_weight == 0.2 and cfg.loss.lpips.loss_weight == 1.0
    assert cfg.loss.lpips_until is None and cfg.model.clustering_vq is True and cfg.trainer.disc_start == 0
    assert cfg.optim.g_optimizer.lr == 2e-5 and cfg.optim.d_optimizer.lr == 2e-5
    plain = load_config(ROOT / "config" / "tokenizer" / "alitok" / "alitok_stage2.yaml",
                        script.overrides(script.parse_args(["--stage", "stage2", "--stage1_exp", "mine"])))
    assert plain.model.clustering_vq is False and plain.loss.lpips.loss_weight == 0.0   # LPIPS off by default
    assert plain.load_checkpoint.exp == "mine" and plain.model.freeze_encoder and not plain.model.causal_decoder
    assert script.main(["--stage", "stage1", "--config", str(STAGE2), "-d", "cpu", "--dry_run"]) == 2


def test_published_sizes_of_the_configs():
    cfg = load_config(ROOT / "config" / "tokenizer" / "alitok" / "alitok_stage1.yaml")
    m = cfg.model
    assert (m.image_size, m.patch_size, m.num_prefix_tokens, m.codebook_size, m.code_dim) == (256, 16, 17, 4096, 32)
    assert (m.encoder.dim, m.encoder.depth, m.decoder.dim, m.decoder.depth) == (768, 12, 1024, 24)
    assert load_config(ROOT / "config" / "tokenizer" / "alitok" / "alitok_stage2.yaml").model.decoder.num_start_tokens == 32
    ar = load_config(ROOT / "config" / "tokenizer" / "alitok" / "c2i_llama_b_alitok.yaml")
    assert ar.model.seq_len == 16 * 16 + 17 and ar.model.vocab_size == 4096


def test_image_dataset_searches_class_folders(tmp_path):
    for cls in ("n01", "n02"):
        (tmp_path / cls).mkdir()
        save_rgb(torch.zeros(3, 40, 40), tmp_path / cls / "a.png")
    assert len(ImageDataset(str(tmp_path), image_size=32, recursive=True)) == 2
    with pytest.raises(FileNotFoundError, match="no image files"):
        ImageDataset(str(tmp_path), image_size=32)
    assert np.isfinite(ImageDataset(str(tmp_path), image_size=32, recursive=True)[(0, 0)]["image"].numpy()).all()


def test_tokenize_writes_sequences(tmp_path, sample_dir):
    from src.zoo.tools import load_tokens, tokenize_folder

    model = tiny_model()
    index = tokenize_folder(model, sample_dir, tmp_path / "tokens", size=32, max_images=2)
    first = next(iter(index["images"].values()))
    seq = np.load(tmp_path / "tokens" / first["file"])
    assert first["tokens"] == [model.num_tokens] and seq.shape == (model.num_tokens,) and seq.dtype == np.uint8
    with pytest.raises(ValueError, match="no patch positions"):
        load_tokens(tmp_path / "tokens")
