"""Whole training runs in subprocesses: SIGTERM mid-run, and a 2-process DDP (gloo) run."""
import os
import signal
import subprocess
import sys
import time

import torch

from src.utils.checkpoint import list_checkpoints, model_state_from_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["model.N=8", "model.M=8", "dataset.train_dataset.image_size=64", "eval_step=null", "log_step=1"]


def train_cmd(ckpt_dir, sample_dir, *opts):
    return [sys.executable, "scripts/train.py", "config/quickstart/demo.yaml", "-d", "cpu", "--opt",
            f"ckpt_dir={ckpt_dir}", f"dataset.train_dataset.root_dir={sample_dir}", *TINY, *opts]


def run(cmd, timeout=240):
    env = dict(os.environ, WANDB_MODE="disabled", OMP_NUM_THREADS="1")
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_sigterm_saves_and_resume_continues_exactly(tmp_path, sample_dir):
    env = dict(os.environ, WANDB_MODE="disabled", OMP_NUM_THREADS="1")
    cmd = train_cmd(tmp_path / "a", sample_dir, "total_iter=100000", "save_step=100000")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = ""
    deadline = time.time() + 180
    while "iter 3:" not in seen and time.time() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        seen += line
    assert "iter 3:" in seen, seen[-2000:]
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out[-2000:]
    assert "received signal" in out
    saved = list_checkpoints(tmp_path / "a", "demo")
    assert len(saved) == 1
    k = next(iter(saved))
    assert k >= 3
    # resume to k + 2, and compare with a straight run to k + 2
    resumed = run(train_cmd(tmp_path / "a", sample_dir, f"total_iter={k + 2}", "save_step=100000"))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"start iter {k}" in resumed.stderr
    straight = run(train_cmd(tmp_path / "b", sample_dir, f"total_iter={k + 2}", "save_step=100000"))
    assert straight.returncode == 0, straight.stderr[-2000:]
    a = model_state_from_file(list_checkpoints(tmp_path / "a", "demo")[k + 2])
    b = model_state_from_file(list_checkpoints(tmp_path / "b", "demo")[k + 2])
    assert all(torch.equal(a[n], b[n]) for n in a)


def test_two_process_gloo_run_writes_one_checkpoint(tmp_path, sample_dir):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29731"]
    cmd += train_cmd(tmp_path, sample_dir, "total_iter=2", "save_step=2")[1:]
    res = run(cmd)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "world size 2" in res.stderr
    assert sorted(list_checkpoints(tmp_path, "demo")) == [2]
    assert len(os.listdir(tmp_path / "demo" / "model")) == 1


def test_dry_run_writes_nothing(tmp_path, sample_dir):
    """--dry_run builds everything, runs one step and its validation, and leaves no file behind."""
    ckpt_dir = tmp_path / "ckpt"
    cmd = [c for c in train_cmd(ckpt_dir, sample_dir) if c != "eval_step=null"] + ["eval_step=1", "total_iter=5"]
    res = run(cmd[:5] + ["--dry_run"] + cmd[5:])   # after "-d cpu", before --opt
    assert res.returncode == 0, res.stderr[-2000:]
    written = [p for p in ckpt_dir.rglob("*") if p.is_file()] if ckpt_dir.exists() else []
    assert written == []
