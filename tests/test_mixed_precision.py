"""The trainer's precision and layout options (``amp``, ``amp_dtype``, ``channels_last``) on the CPU, and
the torchrun detection that lets a 1-process run join a process group."""
import os

import pytest
import torch
from torch import nn

from src.trainer import build_trainer
from src.utils import dist
from src.utils.config import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def step12(tmp_path, sample_dir, *extra):
    """The toy step-1-2 trainer (random VQGAN), 64 px crops, built without writing anything."""
    opts = [f"ckpt_dir={tmp_path}", "subnet.vq_model.ckpt_path=null", "load_checkpoint=null",
            f"dataset.train_dataset.root_dir={sample_dir}", "dataset.train_dataset.image_size=64",
            "dataset.batch_size=2", "eval_step=null", *extra]
    cfg = load_config(os.path.join(ROOT, "config", "quickstart", "stage1_2.yaml"), opts)
    return build_trainer(cfg, exp_name="amp", device="cpu", auto_resume=False, dry_run=True)


def demo(tmp_path, sample_dir, *extra):
    """The small demo hyperprior trainer (tiny widths): bf16 convolutions are slow on CPUs without bf16 units."""
    opts = [f"ckpt_dir={tmp_path}", "model.N=8", "model.M=8", f"dataset.train_dataset.root_dir={sample_dir}",
            "dataset.train_dataset.image_size=64", "eval_step=null", *extra]
    cfg = load_config(os.path.join(ROOT, "config", "quickstart", "demo.yaml"), opts)
    return build_trainer(cfg, exp_name="amp", device="cpu", auto_resume=False, dry_run=True)


def conv_output_dtypes(model):
    """Record the output dtype of every convolution during the next forward pass."""
    seen = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            m.register_forward_hook(lambda mod, inp, out: seen.append(out.dtype))
    return seen


def test_bf16_autocast_on_cpu_runs_the_convolutions_in_bf16_and_keeps_float32_weights(tmp_path, sample_dir):
    trainer = demo(tmp_path, sample_dir, "amp=true", "amp_dtype=bf16")
    assert trainer.amp and trainer.amp_dtype == torch.bfloat16
    assert not any(s.is_enabled() for s in trainer.scalers.values())      # bf16 needs no loss scaling
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    seen = conv_output_dtypes(trainer.model)
    batch = trainer._to_device(next(iter(trainer.train_loader)))
    logs = trainer.train_step(batch, 0)
    assert seen and set(seen) == {torch.bfloat16}
    assert all(torch.isfinite(torch.tensor(float(v))) for v in logs.values())
    after = dict(trainer.model.named_parameters())
    assert all(p.dtype == torch.float32 for p in after.values())
    assert any(not torch.equal(before[n], p) for n, p in after.items())   # the step was applied

    plain = demo(tmp_path, sample_dir)
    seen = conv_output_dtypes(plain.model)
    plain.train_step(plain._to_device(next(iter(plain.train_loader))), 0)
    assert seen and set(seen) == {torch.float32}


def test_channels_last_converts_weights_and_batches_and_gives_the_same_loss(tmp_path, sample_dir):
    nhwc = step12(tmp_path, sample_dir, "channels_last=true")
    weights = [p for p in nhwc.model.parameters() if p.ndim == 4]
    assert weights and all(p.is_contiguous(memory_format=torch.channels_last) for p in weights)
    assert not all(p.is_contiguous() for p in weights)                      # really converted, not 1x1 only
    raw = next(iter(nhwc.train_loader))
    batch = nhwc._to_device(raw)
    assert batch["image"].is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(batch["image"], raw["image"])

    plain = step12(tmp_path, sample_dir)
    assert all(torch.equal(a, b) for a, b in zip(plain.model.state_dict().values(), nhwc.model.state_dict().values()))
    # eval mode (rounding, no noise: training noise is drawn in memory order, so it lands elsewhere in NHWC)
    betas = torch.tensor([0.5, 2.0]), torch.tensor([1.0, 3.0])
    with torch.no_grad():
        a = plain.model.eval()(plain._to_device(raw)["image"], *betas)
        b = nhwc.model.eval()(batch["image"], *betas)
    torch.testing.assert_close(b["x_hat"], a["x_hat"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(b["bpp"], a["bpp"], rtol=1e-4, atol=1e-6)
    logs = nhwc.train_step(batch, 0)
    assert all(torch.isfinite(torch.tensor(float(v))) for v in logs.values())


@pytest.mark.parametrize("opts, message", [(["amp_dtype=fp32"], "bf16 or fp16"),
                                           (["amp=true", "amp_dtype=fp16"], "needs a CUDA device")])
def test_amp_settings_that_cannot_run_are_refused(tmp_path, sample_dir, opts, message):
    with pytest.raises(ValueError, match=message):
        demo(tmp_path, sample_dir, *opts)


def test_torchrun_variables_make_a_one_process_run_distributed(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "MASTER_ADDR"):
        monkeypatch.delenv(key, raising=False)
    assert not dist.launched_by_torchrun()
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert not dist.launched_by_torchrun()                    # no rendezvous address: a plain run
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    assert dist.launched_by_torchrun()
