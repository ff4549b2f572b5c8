import os

import pytest
import torch

from src.trainer import NonFiniteLossError, build_trainer
from src.utils.checkpoint import (atomic_torch_save, checkpoint_path, iter_tag, list_checkpoints,
                                  model_state_from_file, parse_iter_tag, prune_checkpoints)
from src.utils.config import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def demo_cfg(tmp_path, sample_dir, **extra):
    overrides = [f"ckpt_dir={tmp_path / 'ckpt'}", f"dataset.train_dataset.root_dir={sample_dir}",
                 "dataset.train_dataset.image_size=64", "model.N=8", "model.M=8", "eval_step=null",
                 "log_step=1", "save_step=2", "total_iter=4"] + [f"{k}={v}" for k, v in extra.items()]
    return load_config(os.path.join(ROOT, "config/quickstart/demo.yaml"), overrides)


def params(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_iter_tags():
    assert iter_tag(500000) == "500K" and iter_tag(1234) == "1234" and iter_tag(0) == "0"
    assert parse_iter_tag("500K") == 500000 and parse_iter_tag(1234) == 1234


def test_failed_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pth.tar"
    atomic_torch_save({"v": torch.ones(3)}, path)

    def full_disk(obj, f, *a, **k):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match="No space"):
        atomic_torch_save({"v": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.equal(torch.load(path)["v"], torch.ones(3))
    assert os.listdir(tmp_path) == ["ckpt.pth.tar"]      # no temp file left behind


def test_keep_policy(tmp_path):
    for it in (2, 4, 6, 8, 10):
        atomic_torch_save({"comp_model": {}}, checkpoint_path(tmp_path, "e", it))
    prune_checkpoints(tmp_path, "e", keep_iters=[4], keep_every=6, newest=10)
    assert sorted(list_checkpoints(tmp_path, "e")) == [4, 6, 10]


def test_exact_resume_is_bit_identical(tmp_path, sample_dir):
    straight = build_trainer(demo_cfg(tmp_path / "a", sample_dir), exp_name="run", device="cpu")
    straight.train()
    first = build_trainer(demo_cfg(tmp_path / "b", sample_dir, total_iter=2), exp_name="run", device="cpu")
    assert first.train() == 2
    resumed = build_trainer(demo_cfg(tmp_path / "b", sample_dir), exp_name="run", device="cpu")
    assert resumed.start_iter == 2
    assert resumed.train() == 4
    a, b = params(straight.model), params(resumed.model)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    # and training really changed the weights
    fresh = build_trainer(demo_cfg(tmp_path / "c", sample_dir), exp_name="run", device="cpu")
    assert not all(torch.equal(a[k], v) for k, v in params(fresh.model).items())
    saved = model_state_from_file(tmp_path / "b" / "ckpt" / "run" / "model" / "comp_model_iter4.pth.tar")
    assert all(torch.equal(saved[k], b[k]) for k in b)
    assert (tmp_path / "b" / "ckpt" / "run" / "config.yaml").is_file()


def test_load_checkpoint_section_starts_from_previous_step(tmp_path, sample_dir):
    build_trainer(demo_cfg(tmp_path, sample_dir, total_iter=2), exp_name="step1", device="cpu").train()
    cfg = demo_cfg(tmp_path, sample_dir, **{"+load_checkpoint": "{exp: step1, iter: 2, strict: true, new_g_lr: 0.123}"})
    nxt = build_trainer(cfg, exp_name="step2", device="cpu")
    assert nxt.start_iter == 0
    ref = model_state_from_file(checkpoint_path(tmp_path / "ckpt", "step1", 2))
    assert all(torch.equal(v, ref[k]) for k, v in nxt.model.state_dict().items())
    assert nxt.optimizers["g"].param_groups[0]["lr"] == pytest.approx(0.123)
    bad = demo_cfg(tmp_path, sample_dir, **{"+load_checkpoint": "{exp: nothing, iter: 2}"})
    with pytest.raises(FileNotFoundError, match="nothing"):
        build_trainer(bad, exp_name="step3", device="cpu")


def test_nan_loss_names_the_term_and_keeps_last_checkpoint(tmp_path, sample_dir):
    trainer = build_trainer(demo_cfg(tmp_path, sample_dir, total_iter=6), exp_name="nan", device="cpu")
    forward = trainer.model.forward
    calls = {"n": 0}

    def poisoned(x):
        out = forward(x)
        calls["n"] += 1
        if calls["n"] == 3:
            out["bpp"] = out["bpp"] * float("nan")
        return out

    trainer.net.forward = poisoned
    good = params(trainer.model)
    with pytest.raises(NonFiniteLossError, match="'bpp'"):
        trainer.train()
    assert sorted(list_checkpoints(tmp_path / "ckpt", "nan")) == [2]
    saved = model_state_from_file(checkpoint_path(tmp_path / "ckpt", "nan", 2))
    assert all(torch.isfinite(v).all() for v in saved.values() if v.is_floating_point())
    assert any(not torch.equal(saved[k], good[k]) for k in good)


def test_resume_skips_a_corrupt_newest_checkpoint(tmp_path, sample_dir):
    """A truncated newest file (a crash during a copy, a full disk elsewhere) falls back to the one before."""
    build_trainer(demo_cfg(tmp_path, sample_dir, keep_step="[2]"), exp_name="run", device="cpu").train()
    found = list_checkpoints(tmp_path / "ckpt", "run")
    assert sorted(found) == [2, 4]
    found[4].write_bytes(found[4].read_bytes()[:200])
    resumed = build_trainer(demo_cfg(tmp_path, sample_dir, keep_step="[2]"), exp_name="run", device="cpu")
    assert resumed.start_iter == 2
    found[2].write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="none of the 2 checkpoints"):
        build_trainer(demo_cfg(tmp_path, sample_dir, keep_step="[2]"), exp_name="run", device="cpu")


def test_nan_gradient_with_a_finite_loss_is_never_applied(tmp_path, sample_dir):
    """A hook turns one step's gradient into NaN (the loss stays finite): that step leaves the weights
    as they were, the next good step trains again; five bad steps in a row stop the run."""
    trainer = build_trainer(demo_cfg(tmp_path, sample_dir, total_iter=6), exp_name="g", device="cpu")
    weight = trainer.model.codec.g_a[0].weight                                  # trained by the "g" optimizer
    poison = {"on": True}
    weight.register_hook(lambda g: g * float("nan") if poison["on"] else g)
    batch = trainer._to_device(next(iter(trainer.train_loader)))
    before = params(trainer.model)
    trainer.train_step(batch, 0)
    after = params(trainer.model)
    trained = [k for k in before if not k.endswith(("quantiles", "_quantized_cdf", "_offset", "_cdf_length"))]
    assert all(torch.equal(before[k], after[k]) for k in trained)          # the g step was skipped
    assert all(torch.isfinite(v).all() for v in after.values() if v.is_floating_point())
    poison["on"] = False
    trainer.train_step(batch, 1)
    assert any(not torch.equal(after[k], v) for k, v in params(trainer.model).items())
    poison["on"] = True
    with pytest.raises(NonFiniteLossError, match="5 steps in a row"):
        for it in range(2, 8):
            trainer.train_step(batch, it)


def test_load_checkpoint_matching_no_key_stops(tmp_path, sample_dir):
    """A non-strict load_checkpoint whose file shares no key with the model is an error, not a random start."""
    path = checkpoint_path(tmp_path / "ckpt", "other", 2)
    atomic_torch_save({"comp_model": {"encoder.weight": torch.zeros(3)}}, path)
    cfg = demo_cfg(tmp_path, sample_dir, **{"+load_checkpoint": "{exp: other, iter: 2, strict: false}"})
    with pytest.raises(RuntimeError, match="shares none of its 1 keys"):
        build_trainer(cfg, exp_name="next", device="cpu")


def test_temporaries_of_a_killed_save_are_removed_on_start(tmp_path, sample_dir):
    folder = checkpoint_path(tmp_path / "ckpt", "run", 2).parent
    folder.mkdir(parents=True)
    stale = folder / ".comp_model_iter2.pth.abc123.tmp.tar"              # what atomic_write names them
    stale.write_bytes(b"half a checkpoint")
    keep = folder / "notes.txt"
    keep.write_text("mine")
    build_trainer(demo_cfg(tmp_path, sample_dir), exp_name="run", device="cpu")
    assert not stale.exists() and keep.exists()


def test_a_checkpoint_of_other_widths_is_one_paragraph(tmp_path, sample_dir):
    """Loading a file made with other layer widths says how many tensors differ and shows three, in one
    message, instead of one line per mismatched tensor."""
    from src.utils.checkpoint import load_model_state

    small = build_trainer(demo_cfg(tmp_path / "a", sample_dir), exp_name="s", device="cpu").model
    wide = build_trainer(demo_cfg(tmp_path / "b", sample_dir, **{"model.N": 16}), exp_name="w", device="cpu").model
    with pytest.raises(RuntimeError) as err:
        load_model_state(small, wide.state_dict(), strict=True, source="wide.pth.tar")
    text = str(err.value)
    assert "wide.pth.tar does not fit this model" in text and "have other shapes" in text
    assert text.count("file (") == 3 and "\n" not in text
