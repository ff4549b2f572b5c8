"""The benchmark path: eval_tokenizer.py over a sweep of checkpoints with saved reconstructions
(.npz batches as the ADM evaluator / clean-fid read them), L1 / MSE, the Inception Score, and
sample_ar.py's .npz of samples per class."""
import csv
import json

import numpy as np
import pytest
import torch

import src.models  # noqa: F401  (fills MODELS)
import src.zoo.ar  # noqa: F401  (registers LlamaC2I)
from src.metrics.inception_score import inception_class_weight, inception_score, inception_score_from_logits
from src.metrics.weights import FID_INCEPTION, MetricUnavailable
from src.trainer.vqgan_trainer import VQGANTrainer
from src.utils.checkpoint import checkpoint_path
from src.utils.config import load_config
from src.utils.image_io import load_rgb
from src.utils.registry import MODELS
from tests.test_tokenizer_scripts import QUICK, load_script, photos  # noqa: F401  (fixture)


@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory, photos):  # noqa: F811
    """A 256-code f8 tokenizer saved after iterations 1 and 2."""
    out = tmp_path_factory.mktemp("sweep_ckpt")
    cfg = load_config(QUICK / "quickstart_vqgan_prior.yaml", [
        f"ckpt_dir={out}", f"dataset.train_dataset.root_dir={photos}", "dataset.train_dataset.image_size=32",
        "eval_step=null", "total_iter=2", "save_step=1", "keep_step=[1, 2]", "loss.perceptual_loss=null"])
    VQGANTrainer(cfg, exp_name="sweep", device="cpu").train()
    return out / "sweep" / "model"


def test_sweep_writes_metrics_per_checkpoint_and_npz_batches(tmp_path, photos, two_checkpoints):  # noqa: F811
    ev = load_script("eval_tokenizer")
    out = tmp_path / "eval"
    assert ev.main(["--ckpt", str(two_checkpoints), "--images", str(photos), "--out", str(out), "--size", "32",
                    "--no_lpips", "--save_recon"]) == 0
    with open(out / "sweep.csv") as f:
        sweep = list(csv.DictReader(f))
    assert [int(r["iteration"]) for r in sweep] == [1, 2]
    for row, name in zip(sweep, ("comp_model_iter1", "comp_model_iter2")):
        run = out / name
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["iteration"] == int(row["iteration"]) and float(row["psnr"]) == pytest.approx(metrics["psnr"])
        assert 0 < metrics["l1"] < 1 and 0 < metrics["mse"] < metrics["l1"]       # [0, 1] pixels, errors < 1
        assert metrics["psnr"] == pytest.approx(-10 * np.log10(metrics["mse"]), abs=1.0)  # per-image vs mean
        if metrics["inception_score"] is None:                                    # offline: the file is named
            assert FID_INCEPTION.name in metrics["skipped"]["inception_score"]

        recon = np.load(run / "reconstructions.npz")          # as the ADM evaluator opens it
        inputs = np.load(run / "inputs.npz")
        assert recon.files == ["arr_0"] and inputs.files == ["arr_0"]
        r, x = recon["arr_0"], inputs["arr_0"]
        assert r.dtype == np.uint8 and x.dtype == np.uint8 and r.shape == x.shape == (2, 32, 32, 3)
        for i, stem in enumerate(("astronaut", "coffee")):    # sorted names, as the folder
            assert np.array_equal(load_rgb(run / "reconstructions" / f"{stem}.png"), r[i])
        l1 = np.abs(r.astype(np.float64) - x) / 255.0
        assert l1.mean() == pytest.approx(metrics["l1"], abs=1.0 / 255)   # the npz is what was measured
    first = np.load(out / "comp_model_iter1" / "reconstructions.npz")["arr_0"]
    assert not np.array_equal(first, np.load(out / "comp_model_iter2" / "reconstructions.npz")["arr_0"])


def test_npz_needs_one_image_size(tmp_path, photos, two_checkpoints):  # noqa: F811
    ev = load_script("eval_tokenizer")
    ckpt = two_checkpoints / "comp_model_iter2.pth.tar"
    assert ev.main(["--ckpt", str(ckpt), "--images", str(photos), "--out", str(tmp_path), "--no_lpips",
                    "--no_rfid", "--no_is", "--save_recon"]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert "--size" in metrics["skipped"]["npz"] and not (tmp_path / "reconstructions.npz").exists()
    assert sorted(p.name for p in (tmp_path / "reconstructions").iterdir()) == ["astronaut.png", "coffee.png"]
    assert load_rgb(tmp_path / "reconstructions" / "coffee.png").shape == (44, 76, 3)   # whole image, cropped back
    with pytest.raises(SystemExit, match="no comp_model_iter"):
        ev.main(["--ckpt", str(tmp_path), "--images", str(photos), "--out", str(tmp_path / "x")])


def test_inception_score_by_value():
    confident = np.full((40, 8), -30.0)
    confident[np.arange(40), np.arange(40) % 8] = 30.0          # sure of one class each, classes balanced
    assert inception_score_from_logits(confident, splits=1)[0] == pytest.approx(8.0, rel=1e-6)
    same = np.tile(np.array([[5.0, 1.0, 0.0]]), (20, 1))        # every image the same distribution
    assert inception_score_from_logits(same, splits=2) == pytest.approx((1.0, 0.0))
    mean, std = inception_score_from_logits(confident, splits=5)  # 8 images per split, one per class
    assert (mean, std) == pytest.approx((8.0, 0.0), rel=1e-6)
    with pytest.raises(ValueError, match="splits"):
        inception_score_from_logits(confident[:3], splits=10)


def test_inception_score_weight_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(MetricUnavailable) as e:
        inception_class_weight()
    assert FID_INCEPTION.name in str(e.value) and str(tmp_path / "torch") in str(e.value)
    # a stand-in file with a random output layer, random pool3 features (as the FID tests do)
    FID_INCEPTION.path().parent.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save({"fc.weight": torch.randn(1008, 2048) * 0.01, "fc.bias": torch.zeros(1008)}, FID_INCEPTION.path())
    features = np.random.default_rng(0).random((50, 2048))
    mean, std = inception_score(features, splits=5)
    assert 1.0 < mean < 1008 and std >= 0
    w = inception_class_weight()
    assert w.shape == (1008, 2048) and mean == pytest.approx(inception_score(features, w, splits=5)[0])


def test_sample_ar_writes_npz_per_class(tmp_path, two_checkpoints):
    """N samples per class as one uint8 NHWC batch under arr_0, classes in order, PNGs optional."""
    ar_cfg = {"type": "LlamaC2I", "vocab_size": 256, "seq_len": 16, "num_classes": 3, "dim": 32, "depth": 1,
              "num_heads": 4, "multiple_of": 16}
    torch.manual_seed(0)
    ar = MODELS.build(dict(ar_cfg))
    ar_path = tmp_path / "ar.pth.tar"
    torch.save({"comp_model": ar.state_dict(), "config": {"model": ar_cfg}}, ar_path)
    script = load_script("sample_ar")
    out = tmp_path / "samples"
    args = ["--ckpt", str(ar_path), "--tokenizer", str(two_checkpoints / "comp_model_iter2.pth.tar"),
            "--all_classes", "--per_class", "2", "--batch_size", "4", "--npz", "--out"]
    assert script.main(args + [str(out)]) == 0
    data = np.load(out / "samples.npz")
    assert data["arr_0"].dtype == np.uint8 and data["arr_0"].shape == (6, 32, 32, 3)
    assert data["labels"].tolist() == [0, 0, 1, 1, 2, 2]
    assert np.array_equal(load_rgb(out / "class2_1.png"), data["arr_0"][5])
    # the same seed gives the same samples whatever is written
    assert script.main(args + [str(tmp_path / "again"), "--no_png"]) == 0
    assert np.array_equal(np.load(tmp_path / "again" / "samples.npz")["arr_0"], data["arr_0"])
    assert not list((tmp_path / "again").glob("*.png"))
