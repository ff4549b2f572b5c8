import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("WANDB_MODE", "disabled")
# the toy VQGAN prior shipped with the repository (config/_base_/model/dcvic_tiny.yaml)
TOY_PRIOR = ROOT / "checkpoint" / "quickstart_vqgan_prior.pth"


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Tiny convolutions: one intra-op thread is faster than two, and results do not depend on it."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory):
    """scikit-image's bundled photos written as PNG once per test session."""
    from src.data.datasets import export_sample_photos

    folder = tmp_path_factory.mktemp("sample_photos")
    export_sample_photos(folder, names=("astronaut", "coffee", "chelsea", "rocket"))
    return folder


@pytest.fixture
def photo():
    """A real photo as a 1x3xHxW tensor in [-1, 1] (astronaut, 128x128 centre crop)."""
    import torch
    from skimage import data

    arr = data.astronaut()[128:256, 192:320]
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().unsqueeze(0) / 127.5 - 1


# steps of step 1-2 and its learning-rate drop in the trained_toy_codec fixture (the quickstart: 300, 240)
TOY_STEPS = (160, 130)


@pytest.fixture(scope="session")
def trained_toy_codec(tmp_path_factory, sample_dir):
    """Step 1-2 of the quickstart recipe (config/quickstart/stage1_2.yaml on the shipped toy VQGAN prior),
    from the shipped step 1-1 as the quickstart installs it, at the test budget (TOY_STEPS), trained on four
    of the bundled photos: the others are held out from the step that learns the betas (step 1-1, which has
    no betas, saw all eight).

    Returns the step-1-2 checkpoint path and the step-1-2 losses (rate + distortion per step).
    """
    import scripts.quickstart as qs
    from src.trainer import build_trainer
    from src.utils.checkpoint import checkpoint_path
    from src.utils.config import load_config

    ckpt_dir = tmp_path_factory.mktemp("trained")
    common = [f"ckpt_dir={ckpt_dir}", f"dataset.train_dataset.root_dir={sample_dir}", "eval_step=null",
              "log_step=50", f"subnet.vq_model.ckpt_path={TOY_PRIOR}"]
    steps, lr_drop = TOY_STEPS
    warm_steps = qs.total_iter_of(qs.WARMUP_CONFIG)
    qs.install_warmup(qs.SHIPPED_WARMUP, TOY_PRIOR, checkpoint_path(ckpt_dir, "toy11", warm_steps))
    cfg = load_config(ROOT / "config" / "quickstart" / "stage1_2.yaml",
                      [*common, "load_checkpoint.exp=toy11", f"load_checkpoint.iter={warm_steps}",
                       f"total_iter={steps}", f"save_step={steps}", f"optim.g_scheduler.milestones=[{lr_drop}]"])
    trainer = build_trainer(cfg, exp_name="toy", device="cpu")
    losses = []
    step = trainer.train_step

    def recording(batch, it):
        logs = step(batch, it)
        losses.append(logs["rate"] + logs["distortion"])
        return logs

    trainer.train_step = recording
    trainer.train()
    path = ckpt_dir / "toy" / "model" / f"comp_model_iter{cfg.total_iter}.pth.tar"
    assert path.is_file()
    return {"path": path, "losses": losses}
