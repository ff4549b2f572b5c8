"""Published reference curves in data/rd_results: MS-ILLM beside DC-VIC."""
import math

import numpy as np
import pytest

from src.metrics.bd import bd_rate
from src.metrics.rd import load_rd_csv, published_curves


def curve(dataset, model):
    (label, df), = published_curves(dataset, [model])
    assert label == f"{model} (published)"
    return df


@pytest.mark.parametrize("dataset", ["kodak", "clic", "div2k"])
def test_ms_illm_loads_beside_dc_vic(dataset):
    labels = [label for label, _ in published_curves(dataset)]
    assert {"dc_vic_oasis (published)", "dc_vic_patchgan (published)",
            "ms_illm (published)"} <= set(labels)
    df = curve(dataset, "ms_illm")
    assert list(df["quality"]) == [1, 2, 3, 4, 5, 6]
    assert np.all(np.diff(df["bpp"]) > 0)       # bpp increases with quality
    assert np.all(np.diff(df["psnr"]) > 0)
    assert np.all(np.diff(df["lpips"]) < 0)
    for m in ("psnr", "ms_ssim", "lpips", "dists"):
        assert df[m].notna().all()


def test_ms_illm_values_match_the_source():
    # NeuralCompression projects/illm/results.csv @ 5be7844fbeeb6e2b0c152158c9af26353b20faa7
    kodak = curve("kodak", "ms_illm")
    assert kodak["bpp"].iloc[2] == 0.1531745046377182
    assert kodak["psnr"].iloc[2] == 27.53347969055176
    assert kodak["lpips"].iloc[-1] == 0.01800273358821869
    assert "fid" not in kodak and "kid" not in kodak  # empty for Kodak in the source
    clic = curve("clic", "ms_illm")
    assert clic["bpp"].iloc[0] == 0.03462125360965729
    assert clic["fid"].iloc[0] == 6.272188186645508
    assert clic["dists"].iloc[-1] == 0.01988908462226391


def test_all_empty_columns_are_dropped_per_curve(tmp_path):
    path = tmp_path / "rd.csv"
    path.write_text("model,bpp,PSNR,FID\na,0.1,25,\na,0.2,27,\nb,0.1,24,9\nb,0.2,26,7\n")
    (_, a), (_, b) = load_rd_csv(path)
    assert "fid" not in a and list(b["fid"]) == [9, 7]


def test_bd_rate_against_published_curves_is_finite():
    anchor, test = curve("kodak", "dc_vic_patchgan"), curve("kodak", "ms_illm")
    for m, hb in (("psnr", True), ("lpips", False)):
        assert math.isfinite(bd_rate(anchor.bpp, anchor[m], test.bpp, test[m], hb))


def test_unknown_model_names_the_available_ones():
    with pytest.raises(ValueError, match="ms_illm"):
        published_curves("kodak", ["no_such_model"])


def test_points_without_a_metric_are_left_out_of_bd_rate(tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    with pytest.raises(ValueError, match="finite"):
        bd_rate([0.1, 0.2, 0.4], [25.0, float("nan"), 30.0], [0.1, 0.2, 0.4], [25.0, 27.0, 30.0])
    rows = "bpp,psnr,lpips\n0.1,25,0.2\n0.2,27,\n0.4,30,0.1\n0.8,33,0.05\n"
    (tmp_path / "a.csv").write_text(rows)
    (tmp_path / "b.csv").write_text(rows.replace("0.1,", "0.05,", 1))  # test: first point at half the rate
    script = Path(__file__).resolve().parents[1] / "scripts" / "bd_rate.py"
    spec = importlib.util.spec_from_file_location("bd_rate_script", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--anchor", str(tmp_path / "a.csv"), "--test", str(tmp_path / "b.csv")]) == 0
    out = capsys.readouterr().out
    lpips_line = next(line for line in out.splitlines() if line.strip().startswith("lpips"))
    assert "nan" not in lpips_line and "BD-rate" in lpips_line
