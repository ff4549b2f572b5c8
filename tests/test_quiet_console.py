"""Scripts print no warning a user cannot act on (issue 19): torch.jit's FutureWarning (raised while
compressai imports torch_geometric), torch's scheduler-order warning in GAN runs whose D starts later,
and no terminal colour codes from torch's weights-only message."""
import argparse
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
NOISE = ("`torch.jit.script` is deprecated", "lr_scheduler.step()", "\x1b[")


def run(cwd, *args):
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=600)
    return proc.returncode, proc.stderr


def test_gan_training_step_prints_no_jit_or_scheduler_warning(tmp_path, sample_dir):
    # D starts at iteration 5: its optimizer has not stepped when the schedules advance after step 1
    rc, err = run(tmp_path, ROOT / "scripts/train.py", ROOT / "config/tokenizer/quickstart/quickstart_vqgan.yaml",
                  "-d", "cpu", "--dry_run", "--opt", "trainer.disc_start=5", "eval_step=null",
                  f"dataset.train_dataset.root_dir={sample_dir}", "dataset.train_dataset.sample_photos=false",
                  "dataset.train_dataset.image_size=64")
    assert rc == 0, err[-3000:]
    assert "iter 1:" in err                       # it did run a step
    for noise in NOISE:
        assert noise not in err, f"{noise!r} in stderr:\n{err[-3000:]}"


def test_refused_checkpoint_message_is_plain_text(tmp_path):
    bad = tmp_path / "model.pth.tar"
    torch.save({"comp_model": {}, "args": argparse.Namespace(lr=1)}, bad)
    (tmp_path / "imgs").mkdir()
    rc, err = run(tmp_path, ROOT / "scripts/compress.py", "--config_path", ROOT / "config/quickstart/demo.yaml",
                  "--model_path", bad, "--img_dir", "imgs", "--save_dir", "out", "-q", "0", "-d", "cpu")
    assert rc != 0 and "refusing to load" in err and "argparse.Namespace" in err, err[-3000:]
    assert "Weights only load failed" not in err      # torch's own message is not chained above ours
    for noise in NOISE:
        assert noise not in err, f"{noise!r} in stderr:\n{err[-3000:]}"
