"""wandb (offline): files under ``<exp>/wandb/`` (not ``<exp>/wandb/wandb/``), a fresh start of an experiment is
a new run, a resumed training continues the run its checkpoint names (issue 19)."""
import os

import pytest
import torch

from src.trainer import build_trainer
from src.utils.config import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytest.importorskip("wandb")


def demo(ckpt_dir, sample_dir, total_iter):
    return load_config(os.path.join(ROOT, "config/quickstart/demo.yaml"), [
        f"ckpt_dir={ckpt_dir}", f"total_iter={total_iter}", "save_step=1", "eval_step=null", "log_step=1",
        f"dataset.train_dataset.root_dir={sample_dir}", "dataset.train_dataset.sample_photos=false",
        "dataset.train_dataset.image_size=64", "model.N=8", "model.M=8"])


def train(cfg, resume=True):
    trainer = build_trainer(cfg, exp_name="run", device="cpu", use_wandb=True, auto_resume=resume)
    trainer.train()
    return trainer.wandb.run_id


def run_folders(exp_dir):
    return sorted(p.name for p in (exp_dir / "wandb").iterdir() if p.name.startswith("offline-run-"))


def test_fresh_runs_get_new_ids_and_a_resume_continues_its_run(tmp_path, sample_dir, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    exp_dir = tmp_path / "ckpt" / "run"
    first = train(demo(tmp_path / "ckpt", sample_dir, 1))
    assert first and first != "run"
    assert not (exp_dir / "wandb" / "wandb").exists()
    assert [f.rsplit("-", 1)[1] for f in run_folders(exp_dir)] == [first]
    newest = sorted((exp_dir / "model").glob("*.pth.tar"))[-1]
    assert torch.load(newest, weights_only=True)["wandb_run_id"] == first

    resumed = train(demo(tmp_path / "ckpt", sample_dir, 2))          # auto-resume from iteration 1
    assert resumed == first
    fresh = train(demo(tmp_path / "ckpt", sample_dir, 1), resume=False)  # --no-auto-resume: a new run
    assert fresh not in (first, None)
    assert {f.rsplit("-", 1)[1] for f in run_folders(exp_dir)} == {first, fresh}


def test_checkpoint_from_before_run_ids_continues_the_run_named_like_the_experiment(tmp_path, sample_dir,
                                                                                    monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = demo(tmp_path / "ckpt", sample_dir, 1)
    build_trainer(cfg, exp_name="run", device="cpu").train()              # no wandb: stores None
    path = sorted((tmp_path / "ckpt" / "run" / "model").glob("*.pth.tar"))[-1]
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["wandb_run_id"] is None
    assert train(demo(tmp_path / "ckpt", sample_dir, 2)) not in (None, "run")   # resumed, but no run yet
    del ckpt["wandb_run_id"]
    torch.save(ckpt, path)
    for newer in sorted(path.parent.glob("*.pth.tar")):
        if newer != path:
            newer.unlink()
    assert train(demo(tmp_path / "ckpt", sample_dir, 2)) == "run"
