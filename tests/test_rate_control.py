"""Rate control (stage 2): val-set building, beta_rate searches, beta selection, bpp -> betas.

The search logic is checked exactly on synthetic bpp curves; the scripts run end to end on the
toy-width model (random weights: its bpp need not be monotone in beta_rate) and 64x64 crops of
the bundled photos.
"""
import csv
import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from src.ratecontrol import BppCurve, batched_search, betas_for_target_bpp, bisection_search, select_betas
from src.ratecontrol.records import COLUMNS, read_search_answer, search_csv_name, write_search_csv
from src.ratecontrol.search import SearchResult
from src.ratecontrol.selection import write_selection, yaml_snippet

USABLE = ("converged", "non_monotone")   # met within tolerance

TOL = 1e-3
TARGETS = [0.05, 0.075, 0.1, 0.125, 0.15]
CFG = "config/quickstart/stage1_2.yaml"
NULL_VQ = "subnet.vq_model.ckpt_path=null"


def decreasing(beta):
    """A synthetic trained-model-like curve: bpp(0) = 0.23, bpp(3) = 0.0481."""
    return 0.2 * math.exp(-0.8 * beta) + 0.03


def curve_of(fn, n_images=100):
    return BppCurve(lambda betas: [fn(b) for b in betas], n_images)


# -- search logic on synthetic curves ----------------------------------------------------------
def test_batched_search_reaches_every_target_exactly():
    curve = curve_of(decreasing)
    results = batched_search(curve, TARGETS, 3.0, TOL, max_runs=10, k=8)
    for t, r in zip(TARGETS, results):
        assert r.status == "converged"
        assert abs(r.avg_bpp - t) <= TOL
        assert r.avg_bpp == decreasing(r.beta_rate)  # the answer is an evaluated point
    assert curve.passes == 3 and curve.evaluations == 17 * 100  # 8 grid + 5 guesses + 4


def test_unreachable_targets_are_marked_not_looped():
    curve = curve_of(decreasing)
    high, low = batched_search(curve, [0.3, 0.01], 3.0, TOL, max_runs=10, k=8)
    assert (high.status, high.beta_rate, high.avg_bpp) == ("unreachable_high", 0.0, decreasing(0.0))
    assert (low.status, low.beta_rate) == ("unreachable_low", 3.0)
    assert curve.passes == 1  # known after the grid pass
    assert "UNREACHABLE" in high.message(3.0) and "--max_beta_rate" in low.message(3.0)
    bis = bisection_search(curve_of(decreasing), 0.3, 3.0, TOL, max_runs=10)
    assert bis.status == "unreachable_high" and bis.passes == 10


def test_target_within_tolerance_of_an_end_is_reachable():
    r = batched_search(curve_of(decreasing), [decreasing(3.0) - 0.5 * TOL], 3.0, TOL, k=4)[0]
    assert r.status == "converged" and r.beta_rate == 3.0


def test_batched_uses_fewer_passes_and_evaluations_than_bisection():
    bis = [bisection_search(curve_of(decreasing), t, 3.0, TOL, max_runs=10) for t in TARGETS]
    assert all(r.status == "converged" and abs(r.diff) <= TOL for r in bis)
    assert [r.passes for r in bis] == [5, 3, 4, 4, 7]
    joint = curve_of(decreasing)
    batched_search(joint, TARGETS, 3.0, TOL, k=8)
    assert joint.passes == 3 < sum(r.passes for r in bis) == 23
    assert joint.evaluations == 1700 < sum(r.evaluations for r in bis) == 2300
    for t, b in zip(TARGETS, bis):  # one curve per target: fewer passes, more evaluations
        curve = curve_of(decreasing)
        r = batched_search(curve, [t], 3.0, TOL, k=8)[0]
        assert r.status == "converged" and curve.passes == 2 < b.passes
        assert curve.evaluations == 1200


def test_memoisation_and_counts():
    calls = []
    curve = BppCurve(lambda bs: calls.append(list(bs)) or [decreasing(b) for b in bs], num_images=7)
    curve([0.5, 1.0, 0.5])
    curve([1.0, 1.0000000001])
    curve([2.0, 1.0])
    assert calls == [[0.5, 1.0], [2.0]]
    assert (curve.passes, curve.evaluations) == (2, 3 * 7)


def test_non_monotone_curve_and_run_limit():
    wavy = lambda b: 0.3 + 0.05 * math.sin(3 * b)  # noqa: E731
    results = batched_search(curve_of(wavy), [0.27, 0.33], 3.0, TOL, k=8)
    assert all(r.status == "non_monotone" and abs(r.diff) <= TOL for r in results)   # met, but not unique
    curve = curve_of(decreasing)
    r = batched_search(curve, [0.1], 3.0, 1e-9, max_runs=2, k=4)[0]
    assert r.status == "max_runs" and curve.passes == 2 and "NOT reached" in r.message(3.0)


# -- files, selection, interpolation -----------------------------------------------------------
def test_search_csv_name_columns_and_answer(tmp_path):
    r = batched_search(curve_of(decreasing), [0.1], 3.0, TOL, k=8)[0]
    path = write_search_csv(tmp_path, 2.0, r)
    assert path.name == "result_beta_vq_2.00_target_rate_0.100.csv" == search_csv_name(2.0, 0.1)
    rows = list(csv.DictReader(open(path)))
    assert tuple(rows[0]) == COLUMNS and tuple(COLUMNS[:5]) == ("run_cnt", "beta_vq", "beta_rate",
                                                                 "avg_bpp", "diff")
    assert len(rows) == len(r.rows) + 1 and rows[-1]["status"] == "converged"
    ans = read_search_answer(tmp_path, 2.0, 0.1)
    assert ans["beta_rate"] == pytest.approx(r.beta_rate) and abs(ans["diff"]) <= TOL


def test_select_betas_picks_argmax_of_score():
    table = pd.DataFrame({
        "target_rate": [0.05, 0.05, 0.05, 0.1, 0.1],
        "beta_vq": [1.0, 2.0, 3.0, 1.0, 2.0],
        "beta_rate": [2.5, 2.3, 2.2, 1.2, 1.1],
        "psnr": [25.0, 24.0, 23.0, 27.0, 26.0],
        "fid": [30.0, 20.0, 21.0, 10.0, 9.5],
    })  # alpha=2 scores: 20, 28, 25 | 44, 42.5
    sel = select_betas(table, alpha=2.0)
    assert sel.columns.tolist() == ["target_rate", "selected_beta_vq", "selected_beta_rate"]
    assert sel.values.tolist() == [[0.05, 2.0, 2.3], [0.1, 1.0, 1.2]]
    # alpha=0: lowest FID wins
    assert select_betas(table, alpha=0.0)["selected_beta_vq"].tolist() == [2.0, 2.0]
    snippet = yaml_snippet(sel)
    assert "use_selected_beta_pairs: true" in snippet and "2.300" in snippet and "1.00" in snippet


def test_betas_for_target_bpp_interpolates_and_clamps(tmp_path):
    sel = pd.DataFrame({"target_rate": [0.1, 0.05, 0.15], "selected_beta_vq": [2.0, 3.0, 1.0],
                        "selected_beta_rate": [1.12, 2.29, 0.16]})
    path = write_selection(sel, tmp_path)[0]
    assert betas_for_target_bpp(path, 0.1) == pytest.approx((1.12, 2.0))
    assert betas_for_target_bpp(path, 0.075) == pytest.approx(((2.29 + 1.12) / 2, 2.5))
    assert betas_for_target_bpp(path, 0.125) == pytest.approx(((1.12 + 0.16) / 2, 1.5))
    with pytest.warns(UserWarning, match="outside"):
        assert betas_for_target_bpp(path, 0.5) == pytest.approx((0.16, 1.0))
    with pytest.warns(UserWarning, match="outside"):
        assert betas_for_target_bpp(path, 0.01) == pytest.approx((2.29, 3.0))


# -- the tiny model and the scripts -------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Random toy-width model (saved), its VQGAN (saved), an OpenImages-like folder, the val set."""
    import scripts.build_openimage_val_dataset as build
    from PIL import Image
    from src.data.datasets import export_sample_photos
    from src.models.codec.loading import load_codec

    root = tmp_path_factory.mktemp("rc")
    val = root / "openimage" / "validation"
    export_sample_photos(val, names=("astronaut", "coffee", "chelsea", "rocket"))
    Image.fromarray(np.zeros((40, 300, 3), np.uint8)).save(val / "small.png")
    (val / "broken.jpg").write_bytes(b"not an image")
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, _ = load_codec(CFG, None, "cpu", [NULL_VQ])
    torch.save({"comp_model": model.state_dict()}, root / "model.pth")
    torch.save({"state_dict": model.vq_model.state_dict()}, root / "vq.ckpt")
    argv = ["--vqgan_type", "f8-n256", "--openimage_root", str(root / "openimage"), "--save_root",
            str(root / "val"), "--seed", "0", "--num_img", "4", "--crop_size", "64", "--config", CFG,
            "--vq_ckpt_path", str(root / "vq.ckpt"), "--no_progress"]
    assert build.main(argv) == 0
    crops = root / "val" / "vq_f8_n256" / "crop_64_4_seed_0"
    return {"root": root, "model": model, "crops": crops, "build": lambda: build.main(argv)}


def test_build_val_set_resumable_and_skips_small_or_broken(tiny):
    from src.utils.image_io import load_rgb

    crops = tiny["crops"]
    files = sorted(p.name for p in crops.iterdir())
    stems = ["astronaut", "chelsea", "coffee", "rocket"]
    assert files == sorted([f"{s}.png" for s in stems] + [f"{s}.npy" for s in stems])
    img = torch.from_numpy(load_rgb(crops / "coffee.png").copy()).permute(2, 0, 1)[None].float() / 127.5 - 1
    idx = np.load(crops / "coffee.npy")
    assert img.shape[-2:] == (64, 64) and idx.shape == (8, 8) and idx.dtype == np.uint8
    assert (tiny["model"].vq_encode(img)[1][0].numpy() == idx).all()  # the configured VQGAN
    before = {p.name: p.stat().st_mtime_ns for p in crops.iterdir()}
    assert tiny["build"]() == 0
    assert {p.name: p.stat().st_mtime_ns for p in crops.iterdir()} == before


def _grid_curve(model, data, beta_vq):
    from src.ratecontrol.rate import ModelRateFunction

    curve = BppCurve(ModelRateFunction(model, data, beta_vq, batch_size=4), len(data))
    curve([3.0 * i / 7 for i in range(8)])
    return curve


def test_rate_function_matches_forward_bpp(tiny):
    from src.ratecontrol.rate import ModelRateFunction
    from src.ratecontrol.valset import load_val_set

    model, data = tiny["model"], load_val_set(tiny["crops"])
    fn = ModelRateFunction(model, data, 1.5, batch_size=4, max_betas_per_pass=2)
    got = fn([0.3, 2.7, 1.0])
    x, idx = next(data.batches(4))
    with torch.no_grad():
        for b, g in zip([0.3, 2.7, 1.0], got):
            want = model(x, torch.full((4,), b), torch.full((4,), 1.5), vq_indices=idx)["bpp"].mean()
            assert g == pytest.approx(float(want), abs=1e-5)
    no_npy = load_val_set(tiny["crops"])
    no_npy.indices = None  # computed once by the model's VQGAN: the same numbers
    assert ModelRateFunction(model, no_npy, 1.5, 4)([0.3]) == pytest.approx(got[:1], abs=1e-6)


def test_search_on_tiny_model_beats_bisection(tiny):
    from src.ratecontrol.rate import ModelRateFunction
    from src.ratecontrol.valset import load_val_set

    data = load_val_set(tiny["crops"])
    curve = _grid_curve(tiny["model"], data, 1.0)  # the grid pass of the batched search
    values = [v for _, v in curve.sorted_points()]
    lo, hi = min(values), max(values)
    targets = [lo + (hi - lo) * j / 6 for j in (2, 3, 4)]
    results = batched_search(curve, targets + [hi + 1.0], 3.0, TOL, max_runs=10, k=8)
    # the random tiny model's rate is not monotone in beta_rate: answers are met but flagged
    assert all(r.status in USABLE and abs(r.diff) <= TOL for r in results[:3])
    assert results[3].status == "unreachable_high"
    bis = [bisection_search(BppCurve(ModelRateFunction(tiny["model"], data, 1.0, 4), len(data)),
                            t, 3.0, TOL, max_runs=10) for t in targets]
    print(f"\ntiny model, 3 targets: batched {curve.passes} passes / {curve.evaluations} evaluations "
          f"(met 3/3); bisection {sum(r.passes for r in bis)} passes / "
          f"{sum(r.evaluations for r in bis)} evaluations "
          f"(converged {sum(r.status == 'converged' for r in bis)}/3)")
    assert curve.passes < sum(r.passes for r in bis)


@pytest.mark.filterwarnings("ignore:Matrix is singular")  # FID of 4 random-net features
def test_scripts_end_to_end(tiny, capsys):
    import scripts.beta_selection as selection_script
    import scripts.binary_rate_search as search_script
    from src.ratecontrol.valset import load_val_set

    root, crops = tiny["root"], tiny["crops"]
    data = load_val_set(crops)
    curves = [_grid_curve(tiny["model"], data, bv) for bv in (0.5, 2.0)]  # overlapping ranges
    lo = max(min(v for _, v in c.sorted_points()) for c in curves)
    hi = min(max(v for _, v in c.sorted_points()) for c in curves)
    assert lo < hi
    target = round((lo + hi) / 2, 3)
    common = [CFG, "--model_path", str(root / "model.pth"), "--dataset_root", str(crops),
              "--batch_size", "4", "--beta_vq", "0.5", "2.0", "--opt", NULL_VQ]
    search = root / "search"
    argv = common + ["--save_dir", str(search), "--max_beta_rate", "3.0", "--target_rate",
                     str(target), "50.0", "--method", "both", "--max_runs", "8"]
    assert search_script.main(argv) == 0
    for bv in (0.5, 2.0):
        ans = read_search_answer(search, bv, target)
        assert ans["status"] in USABLE and abs(ans["diff"]) <= TOL
        assert read_search_answer(search, bv, 50.0)["status"] == "unreachable_high"
        assert (search / "bisection" / search_csv_name(bv, target)).is_file()
    summary = pd.read_csv(search / "search_summary.csv")
    assert set(summary["status"]) - set(USABLE) == {"unreachable_high"}
    assert (search / "binary_rate_search.log").is_file()

    out = root / "selection"
    argv = common + ["--save_dir", str(out), "--search_dir", str(search), "--target_rate",
                     str(target), "50.0", "--fid_features", "random"]
    assert selection_script.main(argv) == 0
    cands = pd.read_csv(out / f"candidates_target_rate_{target:.3f}.csv")
    assert len(cands) == 2 and np.isfinite(cands[["psnr", "fid"]].to_numpy()).all()
    best = cands.loc[(2.0 * cands["psnr"] - cands["fid"]).idxmax()]
    for folder in (out, search):
        sel = pd.read_csv(folder / "beta_selection_results.csv")
        assert sel.columns.tolist() == ["target_rate", "selected_beta_vq", "selected_beta_rate"]
        assert sel.values.tolist() == [[target, best["beta_vq"], pytest.approx(best["beta_rate"])]]
    assert "selected_beta_rate: [" in capsys.readouterr().out


def test_close_targets_never_share_a_result_file(tmp_path):
    """0.661 and 0.6613 once both wrote ..._target_rate_0.661.csv, and one answer replaced the other."""
    assert search_csv_name(2.0, 0.1) == "result_beta_vq_2.00_target_rate_0.100.csv"   # the reference's names
    assert search_csv_name(2.0, 0.661) != search_csv_name(2.0, 0.6613) != search_csv_name(2.0, 0.6616)
    assert search_csv_name(2.125, 0.1) != search_csv_name(2.13, 0.1)
    for target, beta in ((0.661, 0.857), (0.6613, 3.0)):
        write_search_csv(tmp_path, 2.0, SearchResult(target, beta, target, "converged", [(1, beta, target)]))
    assert read_search_answer(tmp_path, 2.0, 0.661)["beta_rate"] == pytest.approx(0.857)
    assert read_search_answer(tmp_path, 2.0, 0.6613)["beta_rate"] == pytest.approx(3.0)


def test_a_rate_that_rises_with_beta_rate_is_not_called_converged():
    """The toy model's curve 0.6617, 0.6682, 0.6616, 0.6679, ... was once labelled converged."""
    from src.ratecontrol.search import NON_MONOTONE

    def jumps_up(b):   # falls, then jumps up at beta_rate 1: 0.61 is met near 0.375 and again nowhere else
        return 0.64 - 0.08 * b if b < 1 else 0.60

    monotone = [r.status for r in batched_search(curve_of(lambda b: 1.0 - 0.1 * b), [0.85, 0.9], 3.0, 1e-4)]
    assert monotone == ["converged", "converged"]
    for result in (batched_search(curve_of(jumps_up), [0.61], 3.0, error_delta=5e-4)[0],
                   bisection_search(curve_of(jumps_up), 0.61, 3.0, error_delta=5e-4)):
        assert result.status == NON_MONOTONE, (result.status, result.rows)
        assert abs(result.diff) <= 5e-4 and "NOT MONOTONE" in result.message(3.0)
