import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("WANDB_MODE", "disabled")


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
