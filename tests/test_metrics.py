"""Tests of src/metrics and the calc_metrics / plot_rd / bd_rate scripts (CPU, no network)."""
from __future__ import annotations

import json
import math
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
from PIL import Image

from scripts import calc_metrics, plot_rd
from src.metrics import (MetricUnavailable, bd_psnr, bd_rate, extract_patches, fid_from_features,
                         frechet_distance, kid_from_features, ms_ssim, patch_positions, psnr)
from src.metrics.evaluate import evaluate_dirs, pair_images, parse_metrics
from src.metrics.perceptual import DISTSMetric, LPIPSMetric
from src.metrics.fid import InceptionFeatures
from src.metrics.rd import load_rd_csv, published_curves


def const(value: int, h: int = 192, w: int = 192) -> np.ndarray:
    return np.full((h, w, 3), value, np.uint8)


# ---------------------------------------------------------------- PSNR / MS-SSIM
def test_psnr_constant_images_hand_computed():
    # MSE = 10^2 = 100 -> PSNR = 10 log10(255^2 / 100)
    assert psnr(const(100), const(110)).item() == pytest.approx(10 * math.log10(65025 / 100))
    assert math.isinf(psnr(const(7), const(7)).item())
    assert psnr(const(7), const(7), max_db=100.0).item() == 100.0


def test_float_input_is_rounded_to_uint8_grid():
    a = torch.full((3, 16, 16), 100.4 / 255)  # rounds to 100
    b = torch.full((3, 16, 16), 109.6 / 255)  # rounds to 110
    assert psnr(a, b).item() == pytest.approx(psnr(const(100, 16, 16), const(110, 16, 16)).item())
    with pytest.raises(TypeError):
        psnr(np.zeros((4, 4, 3), np.float32), np.zeros((4, 4, 3), np.float32))


def test_ms_ssim_identity_and_constant_images():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (192, 200, 3), dtype=np.uint8)
    assert ms_ssim(img, img).item() == pytest.approx(1.0, abs=1e-6)
    # constant images: every contrast-structure term is 1, only the coarsest luminance remains
    c1 = (0.01 * 255) ** 2
    lum = (2 * 100 * 110 + c1) / (100 ** 2 + 110 ** 2 + c1)
    assert ms_ssim(const(100), const(110)).item() == pytest.approx(lum ** 0.1333, rel=1e-5)
    with pytest.raises(ValueError, match="160"):
        ms_ssim(const(1, 128, 128), const(1, 128, 128))


# ---------------------------------------------------------------- patches
def test_patch_positions_kodak_landscape_and_portrait():
    land = patch_positions(512, 768)
    assert land == [(0, 0), (0, 256), (0, 512), (256, 0), (256, 256), (256, 512),
                    (128, 128), (128, 384)]
    port = patch_positions(768, 512)
    assert port == [(0, 0), (0, 256), (256, 0), (256, 256), (512, 0), (512, 256),
                    (128, 128), (384, 128)]
    assert 24 * len(land) == 192
    assert patch_positions(255, 1000) == []


def test_extract_patches_content():
    img = torch.arange(512 * 768, dtype=torch.float32).reshape(1, 512, 768)
    p = extract_patches(img)
    assert p.shape == (8, 1, 256, 256)
    assert torch.equal(p[7], img[:, 128:384, 384:640])


# ---------------------------------------------------------------- FID / KID
def test_frechet_matches_direct_scipy_reference():
    rng = np.random.default_rng(1)
    d = 6
    a, b = rng.normal(size=(d, d)), rng.normal(size=(d, d))
    s1, s2 = a @ a.T + 0.1 * np.eye(d), b @ b.T + 0.1 * np.eye(d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    r1 = scipy.linalg.sqrtm(s1).real  # symmetric form: tr(sqrt(S1^1/2 S2 S1^1/2))
    ref = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2) - 2 * np.trace(scipy.linalg.sqrtm(r1 @ s2 @ r1).real)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-8)
    # diagonal covariances: closed form sum (mu diff)^2 + sum (sqrt v1 - sqrt v2)^2
    v1, v2 = rng.uniform(0.5, 2, d), rng.uniform(0.5, 2, d)
    closed = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(closed, rel=1e-8)


def test_fid_on_synthetic_gaussian_features():
    rng = np.random.default_rng(2)
    feats = rng.normal(size=(400, 16))
    assert abs(fid_from_features(feats, feats)) < 1e-6
    shifted = feats + 1.0  # same covariance, mean moved by 1 in each of 16 dims
    assert fid_from_features(feats, shifted) == pytest.approx(16.0, rel=1e-6)
    # fewer samples than dimensions (singular covariances) still gives a finite ~0 value
    few = rng.normal(size=(10, 32))
    assert abs(fid_from_features(few, few)) < 1e-3


def test_kid_identical_and_shifted():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(192, 32))
    same_dist = rng.normal(size=(192, 32))
    mean, std = kid_from_features(x, same_dist, num_subsets=20)
    assert abs(mean) < 0.02 and std >= 0
    # identical sets: unbiased estimator gives -2 (mean diag - mean off-diag kernel) / n ~ 0
    diag = np.mean((np.sum(x * x, 1) / 32 + 1) ** 3)
    ident = kid_from_features(x, x, num_subsets=5)[0]
    assert -2 * diag / 192 <= ident <= 0
    assert kid_from_features(x, x + 0.5, num_subsets=20)[0] > 0.1
    with pytest.raises(ValueError):
        kid_from_features(x[:1], x[:1])


def test_kid_over_all_samples_equals_the_unbiased_mmd_closed_form():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(50, 8)), rng.normal(size=(50, 8)) + 0.3

    def k(a, b):
        return (a @ b.T / 8 + 1) ** 3

    m = len(x)
    ref = ((k(x, x).sum() - np.trace(k(x, x))) / (m * (m - 1)) + (k(y, y).sum() - np.trace(k(y, y))) / (m * (m - 1))
           - 2 * k(x, y).mean())
    mean, std = kid_from_features(x, y, num_subsets=3, max_subset_size=1000)   # every subset is the whole set
    assert mean == pytest.approx(ref, rel=1e-10) and std == pytest.approx(0.0, abs=1e-12)
    assert kid_from_features(x, y, num_subsets=4, max_subset_size=20, seed=1) == \
        kid_from_features(x, y, num_subsets=4, max_subset_size=20, seed=1)   # seeded subsets


# ---------------------------------------------------------------- weights / offline
@pytest.fixture
def no_downloads(tmp_path, monkeypatch):
    """Empty torch hub cache and every download fails as without internet."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def refuse(url, *args, **kwargs):
        raise urllib.error.URLError(f"offline test: {url}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    return tmp_path / "torch" / "hub" / "checkpoints"


@pytest.mark.parametrize("factory, filename", [
    (LPIPSMetric, "alexnet-owt-7be5be79.pth"),
    (DISTSMetric, "vgg16-397923af.pth"),
    (InceptionFeatures, "pt_inception-2015-12-05-6726825d.pth"),
])
def test_missing_weights_message_names_file_and_folder(no_downloads, factory, filename):
    with pytest.raises(MetricUnavailable) as info:
        factory("cpu")
    msg = str(info.value)
    assert filename in msg and str(no_downloads) in msg and "MISSING" in msg


def test_other_metrics_computed_when_weights_missing(no_downloads, tmp_path):
    real, fake = tmp_path / "real", tmp_path / "fake"
    write_pair(real, fake, "a", (200, 300))
    res = evaluate_dirs(real, fake, "psnr,lpips,fid,kid", progress=False)
    assert set(res.skipped) == {"lpips", "fid", "kid"}
    assert "alexnet-owt-7be5be79.pth" in res.skipped["lpips"]
    assert "pt_inception-2015-12-05-6726825d.pth" in res.skipped["kid"]
    assert res.summary["psnr"] > 20


def test_lpips_wrapper_with_random_backbone():
    metric = LPIPSMetric(random_backbone=True)
    x = torch.rand(2, 3, 64, 64)
    out = metric(x, x)
    assert out.shape == (2,) and torch.allclose(out, torch.zeros(2, dtype=torch.float64), atol=1e-6)


def test_dists_and_inception_wrappers_with_random_backbones(monkeypatch):
    """Our calling conventions, with untrained VGG16 / Inception (the numbers mean nothing)."""
    import pytorch_fid.inception as pfi
    import torchvision

    vgg16 = torchvision.models.vgg16
    monkeypatch.setattr(torchvision.models, "vgg16", lambda **kw: vgg16(weights=None))
    monkeypatch.setattr(pfi, "fid_inception_v3", lambda: pfi._inception_v3(
        num_classes=1008, aux_logits=False, weights=None, init_weights=False))
    x = torch.rand(2, 3, 64, 64)
    dists = DISTSMetric()(x, x)
    assert dists.shape == (2,) and dists.abs().max() < 1e-4
    feats = InceptionFeatures(batch_size=1)(np.zeros((2, 64, 64, 3), np.uint8))
    assert feats.shape == (2, 2048) and feats.dtype == np.float64


# ---------------------------------------------------------------- selection and pairing
def test_parse_metrics():
    assert parse_metrics("LPIPS, psnr") == ["psnr", "lpips"]
    assert parse_metrics("ms-ssim") == ["ms_ssim"]
    assert parse_metrics("all") == ["psnr", "ms_ssim", "lpips", "dists", "fid", "kid"]
    with pytest.raises(ValueError, match="valid: psnr"):
        parse_metrics("psnr,fidd")
    assert calc_metrics.main(["--real_dir", ".", "--fake_dir", ".", "--metrics", "nope"]) == 2


def write_pair(real: Path, fake: Path, stem: str, size=(64, 48), fake_size=None, fake_ext=".png"):
    """Random real image (W, H = size) and a noisy copy, or an unrelated image of ``fake_size``."""
    rng = np.random.default_rng(sum(map(ord, stem)))
    real.mkdir(exist_ok=True)
    fake.mkdir(exist_ok=True)
    w, h = size
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(img).save(real / f"{stem}.png")
    if fake_size:
        out = rng.integers(0, 256, (fake_size[1], fake_size[0], 3))
    else:
        out = np.clip(img.astype(int) + rng.integers(-8, 9, img.shape), 0, 255)
    Image.fromarray(out.astype(np.uint8)).save(fake / f"{stem}{fake_ext}")


def test_pairing_by_stem_and_errors(tmp_path):
    real, fake = tmp_path / "real", tmp_path / "fake"
    write_pair(real, fake, "kodim01")
    write_pair(real, fake, "kodim02", fake_ext=".bmp")  # other extension is fine
    assert [(r.name, f.name) for r, f in pair_images(real, fake)] == [
        ("kodim01.png", "kodim01.png"), ("kodim02.png", "kodim02.bmp")]
    (fake / "kodim02.bmp").unlink()
    with pytest.raises(FileNotFoundError, match="kodim02.png"):
        pair_images(real, fake)
    write_pair(real, fake, "kodim02", fake_size=(48, 64))
    with pytest.raises(ValueError, match="size mismatch for 'kodim02': kodim02.png is 64x48"):
        evaluate_dirs(real, fake, "psnr", progress=False)


def test_calc_metrics_end_to_end_with_patch_features(tmp_path, monkeypatch):
    real, fake, out = tmp_path / "real", tmp_path / "fake", tmp_path / "out"
    write_pair(real, fake, "wide", size=(512, 384))  # 2 + 1 patches
    write_pair(real, fake, "small", size=(384, 256))  # 1 + 0 patches

    def colour_stats(x):  # cheap stand-in for Inception: per-channel mean and std
        return torch.cat([x.mean((2, 3)), x.std((2, 3))], 1).numpy()

    def fake_lpips(x, y):  # stand-in: per-image mean absolute difference
        return torch.tensor([float(np.abs(x.astype(int) - y).mean())], dtype=torch.float64)

    scorers = {"psnr": psnr, "lpips": fake_lpips, "inception": colour_stats}
    monkeypatch.setattr("src.metrics.evaluate.build_scorers", lambda m, d: (scorers, {}))
    assert calc_metrics.main(["--real_dir", str(real), "--fake_dir", str(fake), "--save_path",
                              str(out), "--metrics", "psnr,lpips,fid,kid", "--no_progress"]) == 0
    data = json.loads((out / "_metrics.json").read_text())
    assert data["num_images"] == 2 and data["num_patches"] == 4 and data["skipped"] == {}
    assert 30 < data["metrics"]["psnr"] < 40 and 3 < data["metrics"]["lpips"] < 5
    assert data["metrics"]["fid"] < 1e-3 and "kid" in data["metrics"]
    csv = (out / "_metrics_per_image.csv").read_text().splitlines()
    assert csv[0] == "name,width,height,psnr,lpips,patches" and len(csv) == 3
    assert csv[2].startswith("wide,512,384,")


def test_ms_ssim_skipped_for_small_images(tmp_path):
    real, fake = tmp_path / "real", tmp_path / "fake"
    write_pair(real, fake, "tiny", size=(64, 48))
    res = evaluate_dirs(real, fake, "psnr,ms_ssim", progress=False)
    assert "160" in res.skipped["ms_ssim"] and "psnr" in res.summary


# ---------------------------------------------------------------- BD-rate and RD plots
RATES = [0.05, 0.09, 0.12, 0.15, 0.19]
PSNRS = [25.1, 26.2, 26.9, 27.7, 28.4]
LPIPS = [0.132, 0.098, 0.083, 0.069, 0.060]


@pytest.mark.parametrize("method", ["pchip", "akima", "cubic"])
def test_bd_rate_identity_and_scaled_rates(method):
    assert bd_rate(RATES, PSNRS, RATES, PSNRS, method=method) == pytest.approx(0, abs=1e-9)
    for r in (0.8, 1.25):
        scaled = [r * x for x in RATES]
        assert bd_rate(RATES, PSNRS, scaled, PSNRS, method=method) == pytest.approx((r - 1) * 100)
        assert bd_rate(RATES, LPIPS, scaled, LPIPS, higher_better=False,
                       method=method) == pytest.approx((r - 1) * 100)


def test_bd_sign_for_lower_is_better_and_bd_psnr():
    better = [v * 0.9 for v in LPIPS]  # lower LPIPS at equal rate: fewer bits for equal LPIPS
    assert bd_rate(RATES, LPIPS, RATES, better, higher_better=False) < 0
    assert bd_psnr(RATES, PSNRS, RATES, [p + 1 for p in PSNRS]) == pytest.approx(1.0)
    assert math.isnan(bd_rate(RATES, PSNRS, RATES, [p + 10 for p in PSNRS]))


def test_published_curves_and_plot(tmp_path):
    curves = published_curves("kodak", ["dc_vic_patchgan"])
    (label, df), = curves
    assert label == "dc_vic_patchgan (published)"
    assert df["bpp"].iloc[0] == pytest.approx(0.0537, abs=1e-4)
    assert df["psnr"].iloc[-1] == pytest.approx(28.417, abs=1e-3)
    ours = tmp_path / "ours.csv"
    ours.write_text("bpp,psnr,lpips,fid\n0.06,25.5,0.12,9\n0.10,26.6,0.09,7\n")
    assert load_rd_csv(ours, "ours")[0][0] == "ours"
    assert plot_rd.main(["--csv", f"{ours}:Ours", "--out", str(tmp_path / "fig" / "rd")]) == 0
    for ext in (".png", ".pdf"):
        assert (tmp_path / "fig" / f"rd{ext}").stat().st_size > 1000


def test_originals_are_read_as_the_codec_reads_them(tmp_path):
    """RGBA and EXIF-rotated originals are scored after the same conversion the codec applies
    (alpha on white, rotation), so a perfect reconstruction scores as perfect."""
    from src.utils.image_io import load_rgb, save_rgb

    real, fake = tmp_path / "real", tmp_path / "fake"
    real.mkdir()
    fake.mkdir()
    rng = np.random.default_rng(0)
    rgba = np.dstack([rng.integers(0, 256, (40, 60, 3), dtype=np.uint8), np.full((40, 60), 90, np.uint8)])
    Image.fromarray(rgba).save(real / "alpha.png")
    img = Image.fromarray(rng.integers(0, 256, (30, 50, 3), dtype=np.uint8))
    exif = img.getexif()
    exif[0x0112] = 6                      # displayed rotated by 90 degrees: 30 x 50 on screen
    img.save(real / "rotated.png", exif=exif)
    for name in ("alpha", "rotated"):
        save_rgb(load_rgb(real / f"{name}.png"), fake / f"{name}.png")
    assert [p[0].name for p in pair_images(real, fake)] == ["alpha.png", "rotated.png"]
    result = evaluate_dirs(real, fake, "psnr", progress=False)
    assert math.isinf(result.summary["psnr"])


def test_calc_metrics_json_is_strict_and_a_skipped_requested_metric_fails(tmp_path, monkeypatch):
    """Identical images give an infinite PSNR: written as null (and listed), never as Infinity.
    A metric asked for by name that cannot be computed makes the exit status 1; the default
    (every metric, skipping those without weights) still exits 0."""
    real, fake, out = tmp_path / "real", tmp_path / "fake", tmp_path / "out"
    write_pair(real, fake, "same", size=(64, 64))
    Image.open(real / "same.png").save(fake / "same.png")          # bit-identical pair
    monkeypatch.setattr("src.metrics.evaluate.build_scorers",
                        lambda m, d: ({"psnr": psnr}, {"lpips": "weights alexnet.pth not found"}))
    args = ["--real_dir", str(real), "--fake_dir", str(fake), "--save_path", str(out), "--no_progress"]
    assert calc_metrics.main(args + ["--metrics", "psnr,lpips"]) == 1
    text = (out / "_metrics.json").read_text()
    data = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert data["metrics"]["psnr"] is None and data["non_finite"] == {"psnr": "inf"}
    assert data["skipped"] == {"lpips": "weights alexnet.pth not found"}
    assert calc_metrics.main(args) == 0


def test_plot_rd_names_a_missing_csv_in_one_line(tmp_path, capsys):
    missing = tmp_path / "nope.csv"
    assert plot_rd.main(["--csv", f"{missing}:Ours", "--out", str(tmp_path / "rd")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: --csv {missing}: no such file"


def test_ssim_per_image_on_the_uint8_grid(photo):
    """SSIM (moved here from the tokenizer tools): 1 for identical images, lower for a noisier copy,
    the same for float [0, 1] CHW and uint8 HWC inputs, and shapes must match."""
    from src.metrics.pixel import ssim

    x = (photo + 1) / 2
    noisy = (x + 0.05 * torch.randn_like(x)).clamp(0, 1)
    same, lower = ssim(torch.cat([x, x]), torch.cat([x, noisy]))
    assert same.item() == pytest.approx(1.0) and lower.item() < 0.95
    as_u8 = lambda t: (t[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()  # noqa: E731
    assert ssim(as_u8(x), as_u8(noisy)).item() == pytest.approx(lower.item(), abs=1e-12)
    with pytest.raises(ValueError, match="shapes differ"):
        ssim(x, x[..., :64])
