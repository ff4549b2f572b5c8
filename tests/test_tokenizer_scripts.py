"""scripts/tokenize.py, scripts/visualize_patches.py and scripts/eval_tokenizer.py on a tiny tokenizer."""
import csv
import importlib.util
import json
import math
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import src.models  # noqa: F401  (fills MODELS)
from src.trainer.vqgan_trainer import VQGANTrainer
from src.utils.checkpoint import checkpoint_path
from src.utils.config import load_config
from src.utils.image_io import load_rgb, to_tensor
from src.utils.registry import MODELS
from src.zoo.tools import index_dtype, load_tokenizer, prepare_image

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "config" / "tokenizer" / "quickstart"


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Two small real photos: 64x64, and 44x76 (not a multiple of 8: padded to 48x80)."""
    from PIL import Image
    from skimage import data

    folder = tmp_path_factory.mktemp("photos")
    Image.fromarray(data.astronaut()[100:164, 180:244]).save(folder / "astronaut.png")
    Image.fromarray(data.coffee()[150:194, 200:276]).save(folder / "coffee.png")
    return folder


@pytest.fixture(scope="module")
def prior_ckpt(tmp_path_factory, photos):
    """A 256-code f8 tokenizer trained for one step by VQGANTrainer, with EMA weights."""
    out = tmp_path_factory.mktemp("ckpt")
    cfg = load_config(QUICK / "quickstart_vqgan_prior.yaml", [
        f"ckpt_dir={out}", f"dataset.train_dataset.root_dir={photos}", "dataset.train_dataset.image_size=32",
        "eval_step=null", "total_iter=1", "save_step=1", "loss.perceptual_loss=null", "trainer.ema_decay=0.9"])
    VQGANTrainer(cfg, exp_name="prior", device="cpu").train()
    return checkpoint_path(out, "prior", 1)


def load_script(name):
    spec = importlib.util.spec_from_file_location(f"script_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_tokenize(argv, monkeypatch):
    """scripts/tokenize.py runs its CLI only as __main__ (its name shadows the stdlib module)."""
    monkeypatch.setattr(sys, "argv", ["tokenize.py", *map(str, argv)])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(ROOT / "scripts" / "tokenize.py"), run_name="__main__")
    assert exit_info.value.code == 0


def test_index_dtype():
    assert index_dtype(256) == np.uint8 and index_dtype(257) == np.int16
    assert index_dtype(2 ** 15) == np.int16 and index_dtype(64000) == np.int32


def test_prepare_image_resizes_shorter_side_and_crops():
    arr = np.zeros((100, 300, 3), np.uint8)
    assert prepare_image(arr, 64).shape == (64, 64, 3)
    assert prepare_image(arr, None) is arr


def test_tokenize_writes_uint8_grids_and_visualize(tmp_path, photos, prior_ckpt, monkeypatch):
    run_tokenize(["--ckpt", prior_ckpt, "--images", photos, "--out", tmp_path / "tok", "--ema"], monkeypatch)
    a, c = np.load(tmp_path / "tok" / "astronaut.npy"), np.load(tmp_path / "tok" / "coffee.npy")
    assert a.dtype == np.uint8 and a.shape == (8, 8)
    assert c.dtype == np.uint8 and c.shape == (6, 10)               # 44x76 padded to 48x80
    index = json.loads((tmp_path / "tok" / "index.json").read_text())
    assert index["codebook_size"] == 256 and index["factor"] == 8
    assert index["images"]["coffee"]["tokens"] == [6, 10]
    model = load_tokenizer(str(prior_ckpt), use_ema=True)
    _, indices = model.encode(to_tensor(load_rgb(photos / "astronaut.png")).unsqueeze(0))
    assert np.array_equal(indices[0].numpy(), a)

    viz = load_script("visualize_patches")
    code = int(a[0, 0])
    out = tmp_path / "patches.png"
    assert viz.main(["--tokens", str(tmp_path / "tok"), "--images", str(photos), "--out", str(out),
                     "--codes", str(code), "999", "--max_patches", "4", "--scale", "2", "--context", "2"]) == 0
    from PIL import Image

    img = np.asarray(Image.open(out))
    assert img.shape[0] == 2 + 2 * (12 * 2 + 2)                      # two rows of (8 + 2*2) px x2
    assert viz.main(["--tokens", str(tmp_path / "tok"), "--images", str(photos), "--out", str(out),
                     "--top", "3"]) == 0


def test_tokenize_int16_and_official_checkpoint(tmp_path, photos, monkeypatch):
    """An FSQ-8000 model saved as an official-style {"state_dict"} file, loaded with --config."""
    config = QUICK / "quickstart_fsq.yaml"
    model = MODELS.build(load_config(config).model.to_dict())
    torch.save({"state_dict": model.state_dict(), "loss.logvar": torch.zeros(())}, tmp_path / "fsq.ckpt")
    run_tokenize(["--ckpt", tmp_path / "fsq.ckpt", "--config", config, "--images", photos,
                  "--out", tmp_path / "tok", "--size", "32"], monkeypatch)
    grid = np.load(tmp_path / "tok" / "astronaut.npy")
    assert grid.dtype == np.int16 and grid.shape == (4, 4) and grid.max() < 8000
    with pytest.raises(ValueError, match="--config"):
        load_tokenizer(str(tmp_path / "fsq.ckpt"))


def test_eval_tokenizer_writes_json_and_csv(tmp_path, photos, prior_ckpt, capsys):
    ev = load_script("eval_tokenizer")
    assert ev.main(["--ckpt", str(prior_ckpt), "--images", str(photos), "--out", str(tmp_path)]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("psnr", "ssim", "usage", "perplexity", "entropy", "entropy_bits", "num_tokens"):
        assert isinstance(metrics[key], (int, float)) and math.isfinite(metrics[key]), key
    assert metrics["num_tokens"] == 64 + 60 and metrics["codebook_size"] == 256
    assert 0 < metrics["usage"] <= 1 and metrics["ms_ssim"] is None  # images too small for MS-SSIM
    for key in ("lpips", "rfid"):                                     # skipped offline, else numbers
        assert (metrics[key] is None) == (key in metrics["skipped"]), key
    with open(tmp_path / "per_image.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == ["astronaut", "coffee"] and float(rows[0]["psnr"]) > 0
    assert "skipped" in capsys.readouterr().out or metrics["skipped"] == {}
    with pytest.raises(KeyError, match="EMA"):
        load_tokenizer(str(_no_ema(tmp_path, prior_ckpt)), use_ema=True)


def _no_ema(tmp_path, ckpt):
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    state.pop("ema_model")
    torch.save(state, tmp_path / "no_ema.pth.tar")
    return tmp_path / "no_ema.pth.tar"
