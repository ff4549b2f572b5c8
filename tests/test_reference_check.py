"""scripts/reference_check.py: the side-by-side harness against the DC-VIC reference.

The reference (github.com/iwa-shi/DC_VIC) is not part of this repository. The last test runs the
harness against a checkout named by $DCVIC_REFERENCE_DIR and is skipped without one; the others
check the harness's own parts with our model standing in for the reference.
"""
import copy
import json
import os
from pathlib import Path

import pytest
import torch

import scripts.reference_check as rc
from src.utils.config import load_config

ROOT = Path(__file__).resolve().parents[1]
TINY = load_config(ROOT / "config" / "_base_" / "model" / "dcvic_tiny.yaml").to_dict()
FULL = load_config(ROOT / "config" / "dc_vic_patchgan.yaml").to_dict()


def _overrides(tree, prefix="", full=FULL):
    """The toy widths of dcvic_tiny.yaml as ``key=value`` overrides (the VQGAN path is set by the harness);
    a mapping the full config lacks (the toy prior's quantizer) goes in whole."""
    out = []
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and isinstance(full, dict) and isinstance(full.get(k), dict):
            out += _overrides(v, key + ".", full[k])
        elif key != "subnet.vq_model.ckpt_path":
            out.append(f"+{key}={json.dumps(v)}")  # '+': some keys (hidden_chs) are new to the full config
    return out


TINY_OVERRIDES = _overrides(TINY)


def as_reference(out):
    """Our forward outputs laid out under the reference's keys (run_model's dict)."""
    return {"fake_images": out["x_hat"], "out_vq_logits": out["vq_logits"], "out_vq_latent": out["vq_latent_hat"],
            "gt_vq_latent": out["vq_latent"], "gt_vq_indices": out["vq_indices"],
            "latent_code": {"y": out["y"]}, "quantized_code": {"y": out["y_hat"], "z": out["z_hat"]},
            "likelihoods": dict(out["likelihoods"])}


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory):
    """A toy-width codec saved as the reference saves comp_model, loaded back through the harness's loader."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        model = rc.our_model("patchgan", None, threads=1, overrides=TINY_OVERRIDES)
        path = tmp_path_factory.mktemp("ref") / "comp_model.pth.tar"
        torch.save({"comp_model": model.state_dict()}, path)
        loaded = rc.our_model("patchgan", path, threads=1, strict=True, overrides=TINY_OVERRIDES)
    images = rc.photo_crops(64)
    return model, loaded, images


def test_missing_reference_is_a_clear_exit(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(rc.ENV_VAR, raising=False)
    assert rc.main(["--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert rc.ENV_VAR in err and "git clone https://github.com/iwa-shi/DC_VIC" in err
    with pytest.raises(rc.ReferenceNotFound, match="missing src/models/comp_model"):
        rc.find_reference_dir(str(tmp_path))
    with pytest.raises(rc.ReferenceNotFound, match="is not a checkout"):
        rc.find_reference_dir(None, env={rc.ENV_VAR: str(tmp_path)})
    for marker in rc.REFERENCE_MARKERS:  # a folder with the reference's files is accepted
        (tmp_path / marker).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / marker).write_text("")
    assert rc.find_reference_dir(None, env={rc.ENV_VAR: str(tmp_path)}) == tmp_path.resolve()


def test_pairs_and_size_are_checked():
    assert rc.parse_args(["--pairs", "0,0", "1.5,2"]).pairs == [(0.0, 0.0), (1.5, 2.0)]
    for bad in (["--pairs", "1"], ["--pairs", "4,0"], ["--size", "100"]):
        with pytest.raises(SystemExit):
            rc.parse_args(bad)


def test_identical_weights_compare_at_zero(stand_in):
    model, loaded, images = stand_in
    pairs = [(0.0, 0.0), (3.0, 3.5)]
    ref_fwd, ref_calls = rc.our_forward(model, images, pairs)
    fwd, calls = rc.our_forward(loaded, images, pairs)
    ref = {"forward": {k: as_reference(v) for k, v in ref_fwd.items()}, "calls": ref_calls,
           "coded": rc.our_coded(model, images[:1], pairs)}
    res = rc.compare_variant(ref, fwd, calls, rc.our_coded(loaded, images[:1], pairs), images)
    res["load"] = "strict"
    for rows in res["forward"].values():
        assert {"x_hat", "y", "y_hat", "z_hat", "likelihoods.y", "likelihoods.z", "vq_logits", "bpp"} <= set(rows)
        assert all(d["status"] == "ok" and d["max_abs"] == 0 for d in rows.values() if isinstance(d, dict))
        assert rows["vq_indices_hat_agreement"] == 1.0 and rows["vq_indices_agreement"] == 1.0
    for rows in res["submodules"].values():
        assert {"encoder", "hyperencoder", "hyperdecoder", "vq_estimator", "fusion_module"} <= set(rows)
        assert all(d["max_abs"] == 0 for d in rows.values() if d["status"] == "ok")
    for row in res["coded"].values():
        assert row["reference_bits"] == row["our_bits"] and row["psnr_ours_vs_reference"] == float("inf")
    assert rc.verdict({"variants": {"patchgan": res}}, 1e-4, 40.0) == []


def test_a_changed_submodule_is_named(stand_in):
    model, loaded, images = stand_in
    other = copy.deepcopy(loaded)
    with torch.no_grad():
        for p in other.vq_estimator.parameters():
            p.add_(0.05 * torch.randn_like(p))
    pairs = [(1.5, 1.75)]
    ref_fwd, ref_calls = rc.our_forward(model, images, pairs)
    fwd, calls = rc.our_forward(other, images, pairs)
    ref = {"forward": {k: as_reference(v) for k, v in ref_fwd.items()}, "calls": ref_calls, "coded": {}}
    res = rc.compare_variant(ref, fwd, calls, {}, images)
    res["load"] = "strict"
    subs, rows = res["submodules"]["1.5,1.75"], res["forward"]["1.5,1.75"]
    assert subs["encoder"]["max_abs"] == 0 and subs["hyperdecoder"]["max_abs"] == 0
    assert subs["vq_estimator"]["max_abs"] > 1e-3
    assert rows["y_hat"]["max_abs"] == 0 and rows["vq_logits"]["max_abs"] > 1e-3
    failures = rc.verdict({"variants": {"patchgan": res}}, 1e-4, 40.0)
    assert any("submodule vq_estimator" in f for f in failures)
    assert not any("submodule encoder" in f for f in failures)
    text = rc.markdown_report({"variants": {"patchgan": res}, "failures": failures})
    assert "| 1.5,1.75 |" in text and "vq_estimator" in text and "Strict load" in text


def test_call_comparison_reports_what_cannot_be_compared():
    a = {"x": [{"out": torch.zeros(2)}], "only_ref": [{"out": torch.zeros(1)}], "twice": [{"out": torch.zeros(1)}]}
    b = {"x": [{"out": torch.ones(3)}], "twice": [{"out": torch.zeros(1)}] * 2}
    rep = rc.compare_calls(a, b)
    assert rep["x"]["status"] == "shape" and rep["only_ref"]["status"] == "missing"
    assert rep["twice"] == {"status": "calls", "reference_calls": 1, "our_calls": 2}


def test_timing_and_write(tmp_path):
    res = {"variants": {}, "timing": {"reference": {"encode_s": 2.0, "decode_s": 4.0, "peak_rss_mib": 1000.0},
                                      "ours": {"encode_s": 1.0, "decode_s": 2.0, "peak_rss_mib": 800.0},
                                      "ratio": {"encode": 0.5, "decode": 0.5, "rss": 0.8}}, "failures": []}
    js, md = rc.write_results(res, tmp_path)
    assert json.loads(js.read_text())["timing"]["ratio"]["rss"] == 0.8
    text = md.read_text()
    assert "encode 0.50x, decode 0.50x, peak RSS 0.80x" in text and "All differences within tolerance." in text
    assert rc.timing_photo().shape == (1, 3, 512, 768)


@pytest.mark.skipif(not os.environ.get(rc.ENV_VAR),
                    reason=f"no reference checkout: {rc.how_to_get_reference()}")
def test_against_the_reference(tmp_path):
    """The real check: the reference's PatchGAN and OASIS models (random init, seed 0) load strictly and
    agree with ours within the harness's tolerances."""
    args = rc.parse_args(["--out", str(tmp_path), "--size", "128", "--pairs", "0,0", "3,3.5", "2.29,3"])
    results = rc.check(args, rc.find_reference_dir())
    rc.write_results(results, tmp_path)
    assert all(v["load"] == "strict" for v in results["variants"].values())
    assert results["failures"] == [], "\n".join(results["failures"])
