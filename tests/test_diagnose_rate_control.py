"""scripts/diagnose_rate_control.py: the numbers it reports are the model's, and it says when a prior is missing."""
import json

import pytest

import scripts.diagnose_rate_control as diag
from src.utils.config import load_config


def test_probe_reports_consistent_rates(tmp_path, capsys):
    assert diag.main(["--steps", "2", "--num_crops", "2", "--work_dir", str(tmp_path), "--opt",
                      "subnet.vq_model.ckpt_path=null", "dataset.batch_size=2"]) == 0
    res = json.loads((tmp_path / "rate_control.json").read_text())
    pts = res["points"]
    top = load_config(diag.ROOT / "config" / "quickstart" / "stage1_2.yaml").subnet.encoder.max_beta_1
    assert [p["beta_rate"] for p in pts] == [top * k / 4 for k in range(5)]        # 0 .. the config's maximum
    for p in pts:
        assert p["bpp"] == pytest.approx(p["bpp_y"] + p["bpp_z"], rel=1e-5) and 0 <= p["vq_acc"] <= 1
    bpps = [p["bpp"] for p in pts]
    assert res["dbpp_dbeta_rate"] == pytest.approx(diag.slope([p["beta_rate"] for p in pts], bpps))
    assert res["bpp_ratio_max_over_0"] == pytest.approx(bpps[-1] / bpps[0])
    assert "d(bpp)/d(beta_rate)" in capsys.readouterr().out


def test_slope_is_least_squares():
    assert diag.slope([0, 1, 2, 3], [3, 1, -1, -3]) == pytest.approx(-2.0)


def test_missing_prior_is_named(tmp_path):
    with pytest.raises(SystemExit, match="VQGAN prior .* not found"):
        diag.main(["--steps", "1", "--work_dir", str(tmp_path), "--opt",
                   f"subnet.vq_model.ckpt_path={tmp_path / 'absent.pth.tar'}"])


def test_warmup_trains_step11_first_and_starts_from_it(tmp_path, caplog):
    import logging

    caplog.set_level(logging.INFO)
    assert diag.main(["--warmup_steps", "1", "--steps", "1", "--num_crops", "2", "--work_dir", str(tmp_path), "--opt",
                      "subnet.vq_model.ckpt_path=null", "dataset.batch_size=2"]) == 0
    assert json.loads((tmp_path / "rate_control.json").read_text())["warmup_steps"] == 1
    assert (tmp_path / "checkpoint" / "warmup" / "model" / "comp_model_iter1.pth.tar").is_file()
    assert "loaded warmup from" in caplog.text                        # step 1-2 started from it
