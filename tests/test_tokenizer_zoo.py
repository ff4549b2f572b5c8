"""The tokenizer zoo: VQ-KD, Cluster, pixel decoders, the AR proposal network (tiny, CPU).

Every teacher here is a tiny randomly initialised ViT (``tiny_vit``): no download.
"""
from __future__ import annotations

import importlib.util
import math
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import src.zoo.trainers  # noqa: F401  (registers the zoo trainers)
from src.trainer import build_trainer
from src.utils.checkpoint import latest_checkpoint, load_file
from src.utils.config import load_config
from src.zoo.ar import LlamaC2I, TokenDataset, filter_logits, sample
from src.zoo.tokenizers import VQKD, ClusterTokenizer, EMACosineQuantizer, build_teacher
from src.zoo.tokenizers.teachers import TeacherUnavailable

ROOT = Path(__file__).resolve().parents[1]
TINY_TEACHER = {"name": "tiny_vit", "dim": 24, "depth": 1, "num_heads": 2, "seed": 0}


def run_training(config: str, exp: str, ckpt_dir: Path, sample_dir: Path, *opts: str):
    """Three steps through build_trainer (what scripts/train.py does); returns (logs, checkpoint)."""
    cfg = load_config(ROOT / config, [f"ckpt_dir={ckpt_dir}", "total_iter=3", "eval_step=3", "save_step=3",
                                      "log_step=1", "eval_max_images=1", *opts])
    if cfg.dataset.train_dataset.type == "ImageDataset":
        cfg.dataset.train_dataset.root_dir = str(sample_dir)
        cfg.dataset.eval_dataset.root_dir = str(sample_dir)
    trainer = build_trainer(cfg, exp_name=exp, device="cpu", auto_resume=False)
    logs, step = [], trainer.train_step
    trainer.train_step = lambda batch, it: logs.append(step(batch, it)) or logs[-1]
    assert trainer.train() == 3
    return logs, latest_checkpoint(ckpt_dir, exp)


@pytest.fixture(scope="module")
def zoo_runs(tmp_path_factory, sample_dir):
    """VQ-KD, then a pixel decoder on it, trained once for the module."""
    ckpt_dir = tmp_path_factory.mktemp("zoo")
    vqkd = run_training("config/tokenizer/vqkd/quickstart_vqkd.yaml", "vqkd", ckpt_dir, sample_dir)
    decoder = run_training("config/tokenizer/decoder/quickstart_decoder.yaml", "decoder", ckpt_dir, sample_dir,
                           f"load_model_from={vqkd[1]}", "trainer.disc_start=1")
    return {"dir": ckpt_dir, "vqkd": vqkd, "decoder": decoder}


# ------------------------------------------------------------------------------ training runs
def test_vqkd_trains_and_checkpoints(zoo_runs):
    logs, path = zoo_runs["vqkd"]
    assert len(logs) == 3 and all(math.isfinite(v) for log in logs for v in log.values())
    assert 0.0 <= logs[-1]["rec"] <= 2.0 and logs[-1]["quant"] > 0
    ckpt = load_file(path)
    assert ckpt["iter"] == 3 and "quantize.codebook" in ckpt["comp_model"]
    assert not any("teacher" in k for k in ckpt["comp_model"])  # the teacher is rebuilt, not stored


def test_cluster_trains_without_optimizer(tmp_path, sample_dir):
    logs, path = run_training("config/tokenizer/cluster/quickstart_cluster.yaml", "cluster", tmp_path, sample_dir,
                              "model.codebook=ema")
    assert all(math.isfinite(v) for log in logs for v in log.values())
    ckpt = load_file(path)
    assert set(ckpt["comp_model"]) == {"quantize.codebook", "quantize.usage", "quantize.initted"}
    assert ckpt["optimizers"] == {}
    codebook = ckpt["comp_model"]["quantize.codebook"]
    assert codebook.shape == (64, 24) and torch.allclose(codebook.norm(dim=1), torch.ones(64), atol=1e-5)


def test_pixel_decoder_keeps_tokenizer_frozen(zoo_runs):
    logs, path = zoo_runs["decoder"]
    assert all(math.isfinite(v) for log in logs for v in log.values()) and "gan" in logs[-1]
    tok = load_file(zoo_runs["vqkd"][1])["comp_model"]
    dec = load_file(path)
    for k, v in tok.items():
        assert torch.equal(dec["comp_model"][f"tokenizer.{k}"], v), k
    assert dec["config"]["model"]["tokenizer"]["type"] == "VQKD"  # the run rebuilds alone


def test_pixel_decoder_needs_a_tokenizer(tmp_path, sample_dir):
    with pytest.raises(ValueError, match="load_model_from"):
        run_training("config/tokenizer/decoder/quickstart_decoder.yaml", "nodec", tmp_path, sample_dir)


def write_tokens(root: Path, n_per_class=3, classes=("cat", "dog"), vocab=64, grid=8, seed=0):
    rng = np.random.default_rng(seed)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(n_per_class):
            np.save(root / c / f"{c}{i}.npy", rng.integers(0, vocab, (grid, grid)).astype(np.int16))
    return root


def test_token_dataset_labels_from_folders(tmp_path):
    ds = TokenDataset(str(write_tokens(tmp_path / "tok")), seq_len=64)
    assert len(ds) == 6 and ds.classes == ["cat", "dog"]
    item = ds[(4, 123)]
    assert item["label"].item() == 1 and item["tokens"].shape == (64,) and item["tokens"].dtype == torch.long
    with pytest.raises(ValueError, match="seq_len"):
        TokenDataset(str(tmp_path / "tok"), seq_len=16)[0]


def test_ar_trains_then_samples_images(zoo_runs, tmp_path):
    tokens = write_tokens(tmp_path / "tokens")
    opts = [f"dataset.train_dataset.root_dir={tokens}", f"dataset.eval_dataset.root_dir={tokens}",
            "model.num_classes=2", f"validation.tokenizer_checkpoint={zoo_runs['decoder'][1]}"]
    logs, path = run_training("config/tokenizer/ar/quickstart_ar.yaml", "ar", tmp_path, tmp_path, *opts)
    assert all(math.isfinite(log["ce"]) for log in logs) and abs(logs[0]["ce"] - math.log(64)) < 1.0
    assert (tmp_path / "ar" / "samples" / "iter_3" / "sample_0.png").is_file()  # decoded in validation
    spec = importlib.util.spec_from_file_location("sample_ar", ROOT / "scripts" / "sample_ar.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "samples"
    assert script.main(["--ckpt", str(path), "--tokenizer", str(zoo_runs["decoder"][1]), "--classes", "0", "1",
                        "--top_k", "5", "--save_tokens", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.glob("*.png")) == ["class0_0.png", "class1_0.png"]
    assert np.load(out / "class1_0.npy").shape == (64,)


# ----------------------------------------------------------------------------- quantizer stats
def test_codebook_usage_on_hand_made_example():
    q = EMACosineQuantizer(codebook_size=4, dim=4, decay=0.5, kmeans_init=False)
    q.codebook.copy_(torch.eye(4))
    z = torch.tensor([[2.0, 0.1, 0, 0], [1.0, 0, 0.1, 0], [0, 3.0, 0, 0], [0.1, 0, 1.0, 0]])
    out = q.eval()(z.view(2, 2, 4).permute(0, 2, 1))  # (B=2, C=4, 2 positions)
    assert out.indices.tolist() == [[0, 0], [1, 2]]
    probs = torch.tensor([0.5, 0.25, 0.25])
    entropy = -(probs * probs.log()).sum()
    assert out.stats["usage"].item() == pytest.approx(0.75)
    assert out.stats["entropy"].item() == pytest.approx(entropy.item(), abs=1e-6)
    assert out.stats["perplexity"].item() == pytest.approx(2 ** 1.5, abs=1e-5)
    assert torch.equal(q.codebook, torch.eye(4))  # eval: no update


def test_ema_update_and_reanchoring():
    z = F.normalize(torch.tensor([[1.0, 0.2, 0, 0], [1.0, -0.2, 0, 0], [0, 1.0, 0, 0.5]]), dim=1)
    for reanchor in (False, True):
        q = EMACosineQuantizer(codebook_size=4, dim=4, decay=0.5, kmeans_init=False, reanchor=reanchor)
        q.codebook.copy_(torch.eye(4))
        q.train()(z.t().unsqueeze(0))
        assert torch.allclose(q.codebook[0], torch.tensor([1.0, 0, 0, 0]), atol=1e-6)  # mean of z0, z1 is e0
        expect_1 = F.normalize(0.5 * torch.eye(4)[1] + 0.5 * z[2], dim=0)
        assert torch.allclose(q.codebook[1], expect_1, atol=1e-6)
        if reanchor:  # unused code 3 jumps to its closest feature (z2, the one with a 4th component)
            assert torch.allclose(q.codebook[3], z[2], atol=1e-3)
        else:
            assert torch.equal(q.codebook[3], torch.eye(4)[3])
        assert torch.allclose(q.codebook.norm(dim=1), torch.ones(4), atol=1e-6)


# ------------------------------------------------------------------------------------ models
def test_teacher_outside_state_dict_and_moves_with_model():
    m = VQKD(teacher=TINY_TEACHER, image_size=64, encoder=dict(dim=32, depth=1, num_heads=2),
             decoder=dict(dim=32, depth=1, num_heads=2), codebook_size=16, code_dim=8)
    out = m(torch.rand(2, 3, 64, 64) * 2 - 1)
    assert out["features"].shape == out["target"].shape == (2, 24, 4, 4)
    assert not any("teacher" in k for k in m.state_dict())
    n_params = sum(p.numel() for p in m.parameters())
    m.double()
    assert all(p.dtype == torch.float64 for p in m._teacher.module.parameters())
    assert sum(p.numel() for p in m.parameters()) == n_params
    _, idx = m.float().eval().encode(torch.zeros(1, 3, 96, 128))  # other sizes: resized position table
    assert idx.shape == (1, 6, 8)


def test_tiny_teacher_is_reproducible_and_cluster_encodes():
    a, b = build_teacher(**TINY_TEACHER, image_size=64), build_teacher(**TINY_TEACHER, image_size=64)
    x = torch.rand(1, 3, 64, 64)
    assert torch.equal(a(x), b(x))
    c = ClusterTokenizer(teacher=TINY_TEACHER, image_size=64, codebook_size=8, kmeans_init=False).eval()
    latent, idx = c.encode(x)
    assert latent.shape == (1, 24, 4, 4) and idx.shape == (1, 4, 4) and int(idx.max()) < 8


def test_missing_teacher_weights_message(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    monkeypatch.setitem(sys.modules, "timm", types.SimpleNamespace(create_model=offline))
    with pytest.raises(TeacherUnavailable) as e:
        build_teacher("clip_vit_b16")
    msg = str(e.value)
    assert "vit_base_patch16_clip_224.openai" in msg and "CLIP ViT-B/16" in msg
    assert "models--timm--vit_base_patch16_clip_224.openai" in msg and "timm.create_model(" in msg
    with pytest.raises(KeyError, match="valid: clip_vit_b16"):
        build_teacher("no_such_teacher")


# ----------------------------------------------------------------------------------------- AR
def tiny_ar(**kw) -> LlamaC2I:
    torch.manual_seed(0)
    return LlamaC2I(**{"vocab_size": 50, "seq_len": 16, "num_classes": 3, "dim": 32, "depth": 2,
                       "num_heads": 4, "multiple_of": 16, **kw}).eval()


def test_ar_is_causal_and_cache_matches():
    m = tiny_ar()
    tokens, labels = torch.randint(0, 50, (2, 16)), torch.tensor([0, 2])
    logits = m(tokens, labels)
    changed = tokens.clone()
    changed[:, 9:] = (changed[:, 9:] + 1) % 50
    # logits[:, t] predicts token t from tokens < t: positions <= 9 cannot see the change
    assert torch.allclose(m(changed, labels)[:, :10], logits[:, :10], atol=1e-5)
    assert not torch.allclose(m(changed, labels)[:, 10:], logits[:, 10:], atol=1e-5)
    cache, x, steps = m.new_cache(), m.cls_embed(labels).unsqueeze(1), []
    for t in range(16):
        steps.append(m.run(x, start=t, cache=cache)[:, -1])
        x = m.tok_embed(tokens[:, t]).unsqueeze(1)
    assert torch.allclose(torch.stack(steps, 1), logits, atol=1e-4)


def test_sampling_reproducible_and_respects_top_k():
    m = tiny_ar()
    labels = torch.tensor([0, 1, 2])
    head_out = []
    hook = m.head.register_forward_hook(lambda mod, inp, out: head_out.append(out[:, -1].float()))
    scale, k = 3.0, 4
    first = sample(m, labels, cfg_scale=scale, top_k=k, generator=torch.Generator().manual_seed(7))
    hook.remove()
    second = sample(m, labels, cfg_scale=scale, top_k=k, generator=torch.Generator().manual_seed(7))
    assert torch.equal(first, second)
    assert not torch.equal(first, sample(m, labels, cfg_scale=scale, top_k=k,
                                         generator=torch.Generator().manual_seed(8)))
    assert len(head_out) == 16
    for t, out in enumerate(head_out):  # guidance from the hooked head: cond rows, then null-class rows
        cond, uncond = out.chunk(2)
        top = torch.topk(uncond + scale * (cond - uncond), k, dim=-1).indices
        assert (top == first[:, t:t + 1]).any(-1).all(), t


def test_filter_logits_top_k_and_top_p():
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0, -1.0]])
    assert torch.isfinite(filter_logits(logits, top_k=2)).tolist() == [[True, True, False, False, False]]
    probs = F.softmax(logits, -1)[0]  # 0.64, 0.24, 0.09, ...
    kept = torch.isfinite(filter_logits(logits, top_p=float(probs[0] + 0.01)))
    assert kept.tolist() == [[True, True, False, False, False]]
    assert torch.isfinite(filter_logits(logits, top_p=0.1)).sum() == 1  # the best token always stays


def test_class_dropout_rate():
    m = tiny_ar(class_dropout=0.1).train()
    torch.manual_seed(0)
    dropped = (m.drop_classes(torch.zeros(40000, dtype=torch.long)) == m.null_class).float().mean().item()
    assert abs(dropped - 0.1) < 0.006
    assert (m.eval().drop_classes(torch.zeros(100, dtype=torch.long)) == 0).all()
