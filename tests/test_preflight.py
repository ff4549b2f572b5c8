"""Scripts check their inputs before building anything and report every problem at once (issue 19), and
relative input paths of a config are found from any current directory.

The script runs go through a wrapper that reports which heavy modules were imported when the script
exited: the checks run before torch is imported, so no model can have been built (by structure, not by
a timing).
"""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from src.utils import paths
from src.utils.preflight import Preflight, can_reach, training_inputs
from src.utils.weight_files import (FID_INCEPTION_FILE, LPIPS_BACKBONES, TIMM_TEACHERS, TORCHVISION_FILES,
                                    hf_cache_dir, hub_checkpoint_dir)

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "compressai", "torchvision", "lpips", "pandas")
WRAPPER = """
import json, runpy, sys
path = sys.argv[1]
sys.argv = [path] + sys.argv[2:]
code = 0
try:
    runpy.run_path(path, run_name="__main__")
except SystemExit as exit_:
    code = exit_.code
print("HEAVY_MODULES=" + json.dumps([m for m in {heavy!r} if m in sys.modules]))
sys.exit(code if isinstance(code, int) else 1)
"""


def run_script(script, *args, cwd=ROOT, env=None):
    """(exit status, stderr, heavy modules imported) of ``scripts/<script> args`` run from ``cwd``."""
    import os

    proc = subprocess.run([sys.executable, "-c", WRAPPER.format(heavy=HEAVY), str(ROOT / "scripts" / script),
                           *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})
    marker = [ln for ln in proc.stdout.splitlines() if ln.startswith("HEAVY_MODULES=")]
    return proc.returncode, proc.stderr, json.loads(marker[-1].split("=", 1)[1]) if marker else None


def problems(stderr):
    """The numbered problem lines of a preflight report."""
    return [m.group(1) for m in re.finditer(r"^  \d+\. (.*)$", stderr, re.M)]


@pytest.mark.parametrize("script", ["compress.py", "eval_kodak.py"])
def test_codec_script_lists_model_path_image_folder_and_vqgan_before_importing_torch(script, tmp_path):
    model, images = tmp_path / "no_model.pth.tar", tmp_path / "no_images"
    rc, err, heavy = run_script(script, "--config_path", ROOT / "config/dc_vic_patchgan.yaml", "--model_path", model,
                                "--img_dir", images, "--save_dir", tmp_path / "out", "-q", "1", "-d", "cpu",
                                "--opt", f"subnet.vq_model.ckpt_path={tmp_path / 'vq-f8-n256.ckpt'}")
    assert rc == 2, err
    found = problems(err)
    assert len(found) == 3, err
    assert str(model) in found[0] and "--model_path" in found[0]
    assert str(images) in found[1] and "--img_dir" in found[1]
    assert "subnet.vq_model.ckpt_path" in found[2] and "vq-f8-n256.ckpt" in found[2]
    assert err.count("fix:") == 3 and "ommer-lab.com" in err          # each with its fix
    assert heavy == [], f"{script} imported {heavy} before reporting"
    assert not (tmp_path / "out").exists()


def test_train_1d_tokenizer_missing_root_and_offline_weights_in_one_report(tmp_path):
    rc, err, heavy = run_script("train_1d_tokenizer.py", "--root", tmp_path / "nonexistent", "--lpips_weight", "1.0",
                                "-d", "cpu", cwd=tmp_path, env={"TORCH_HOME": str(tmp_path / "torch_home")})
    assert rc == 2, err
    found = problems(err)
    assert any("dataset.train_dataset.root_dir" in p and "nonexistent" in p for p in found), err
    # the weights of LPIPS (VGG, on with --lpips_weight) and of the ConvNeXt loss: a problem only where they
    # cannot be downloaded
    weight_lines = [p for p in found if "vgg16-397923af.pth" in p or "convnext_small-0c510722.pth" in p]
    assert len(weight_lines) == (0 if can_reach("download.pytorch.org") else 2), err
    assert str(tmp_path / "torch_home" / "hub" / "checkpoints") in err or not weight_lines
    assert heavy == [] and not (tmp_path / "checkpoint").exists()


def test_train_reports_config_errors_and_missing_data_together(tmp_path):
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(f"_base_: {ROOT / 'config/quickstart/demo.yaml'}\n"
                   f"dataset:\n  train_dataset: {{sample_photos: false, root_dir: {tmp_path / 'photos'}}}\n")
    rc, err, heavy = run_script("train.py", cfg, "-d", "cpu", cwd=tmp_path)
    assert rc == 2 and heavy == [], err
    assert "dataset.train_dataset.root_dir" in err and str(tmp_path / "photos") in err
    # a typo in an override is reported the same way (no traceback)
    rc, err, heavy = run_script("train.py", cfg, "-d", "cpu", "--opt", "trainer.lerning_rate=1", cwd=tmp_path)
    assert rc == 2 and heavy == [] and "Traceback" not in err and "lerning_rate" in problems(err)[0]


def test_teacher_checks(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pf = Preflight()
    pf.config_inputs({"model": {"teacher": {"name": "clip_vit_b16"}}}, train=True)
    pf.config_inputs({"model": {"teacher": {"name": "clip_vit_b17"}}}, train=True)
    pf.config_inputs({"model": {"teacher": {"name": "tiny_vit"}}}, train=True)
    text = pf.message()
    assert "vit_base_patch16_clip_224.openai" in text and str(tmp_path / "hf" / "hub") in text
    assert "unknown teacher 'clip_vit_b17'" in text and "dino_vit_b16" in text
    (tmp_path / "hf" / "hub" / "models--timm--vit_base_patch16_clip_224.openai").mkdir(parents=True)
    cached = Preflight()
    cached.config_inputs({"model": {"teacher": {"name": "clip_vit_b16"}}}, train=True)
    assert not any("Hugging Face cache" in p for p, _ in cached.problems)


def test_no_problem_when_everything_is_there(tmp_path, sample_dir):
    pf, cfg = training_inputs(ROOT / "config/quickstart/demo.yaml", [f"dataset.train_dataset.root_dir={sample_dir}",
                                                                     "dataset.train_dataset.sample_photos=false"])
    assert pf.problems == [] and not pf.failed()
    assert cfg.dataset.train_dataset.root_dir == str(sample_dir)


def test_weight_file_names_match_the_libraries(monkeypatch, tmp_path):
    import torch
    from torchvision import models

    from src.losses.perceptual import _BACKBONE_FILES
    from src.metrics.weights import FID_INCEPTION
    from src.zoo.tokenizers.teachers import TEACHERS

    for name, fname in TORCHVISION_FILES.items():
        assert models.get_model_weights(name).DEFAULT.url.endswith("/" + fname)
    assert _BACKBONE_FILES == {net: TORCHVISION_FILES[m] for net, m in LPIPS_BACKBONES.items()}
    assert FID_INCEPTION.name == FID_INCEPTION_FILE
    assert {k: v.timm_name for k, v in TEACHERS.items()} == TIMM_TEACHERS
    for env in ({}, {"TORCH_HOME": str(tmp_path / "th")}, {"XDG_CACHE_HOME": str(tmp_path / "xdg")}):
        monkeypatch.delenv("TORCH_HOME", raising=False)
        monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        assert hub_checkpoint_dir() == Path(torch.hub.get_dir()) / "checkpoints"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hfh"))
    assert hf_cache_dir() == tmp_path / "hfh" / "hub"


# ---------------------------------------------------------------- relative paths (cwd, then the repository)
def test_relative_input_is_found_under_the_repository_from_another_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rel = "config/_base_/default.yaml"
    assert paths.find_input("./" + rel, "file") == ROOT / rel
    assert paths.looked_for(rel) == f"{tmp_path / rel}, {ROOT / rel}"
    (tmp_path / "config" / "_base_").mkdir(parents=True)
    (tmp_path / rel).write_text("seed: 1\n")
    assert paths.find_input(rel, "file") == tmp_path / rel      # the current directory comes first
    assert paths.find_input(rel, "dir") is None
    assert paths.candidate_paths(tmp_path / "x") == [tmp_path / "x"]


def test_script_from_another_cwd_finds_the_configs_relative_default(tmp_path):
    # a relative path that exists only under the repository stands in for the default VQGAN path
    rc, err, heavy = run_script("compress.py", "--config_path", ROOT / "config/dc_vic_patchgan.yaml", "--model_path",
                                "m.pth.tar", "--img_dir", "imgs", "--save_dir", "out", "-q", "1", "--opt",
                                "subnet.vq_model.ckpt_path=./config/_base_/default.yaml", cwd=tmp_path)
    assert rc == 2 and heavy == [], err
    assert "vq_model" not in err and len(problems(err)) == 2
    # and the missing default says where it was looked for
    rc, err, _ = run_script("compress.py", "--config_path", ROOT / "config/dc_vic_patchgan.yaml", "--model_path",
                            "m.pth.tar", "--img_dir", "imgs", "--save_dir", "out", "-q", "1", cwd=tmp_path)
    if not (ROOT / "checkpoint/pretrained_vq_model/vq-f8-n256.ckpt").exists():
        assert (f"looked for: {tmp_path / 'checkpoint/pretrained_vq_model/vq-f8-n256.ckpt'}, "
                f"{ROOT / 'checkpoint/pretrained_vq_model/vq-f8-n256.ckpt'}") in err


def test_vqgan_loader_resolves_a_relative_path_against_the_repository(tmp_path, monkeypatch):
    import torch

    from src.models.vq import VQGAN, build_pretrained_vq_model

    dd = dict(double_z=False, z_channels=4, resolution=64, in_channels=3, out_ch=3, ch=32, ch_mult=[1, 1],
              num_res_blocks=1, attn_resolutions=[], dropout=0.0)
    repo = tmp_path / "repo"
    (repo / "checkpoint").mkdir(parents=True)
    torch.manual_seed(0)
    ref = VQGAN(embed_dim=4, n_embed=16, ddconfig=dd)
    torch.save({"state_dict": ref.state_dict()}, repo / "checkpoint" / "vq.ckpt")
    monkeypatch.setattr(paths, "REPO_ROOT", repo)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    model = build_pretrained_vq_model("./checkpoint/vq.ckpt", embed_dim=4, n_embed=16, ddconfig=dd)
    assert torch.equal(model.quantize.embedding.weight, ref.quantize.embedding.weight)
    with pytest.raises(FileNotFoundError) as err:
        build_pretrained_vq_model("./checkpoint/other.ckpt", embed_dim=4, n_embed=16, ddconfig=dd)
    assert f"{elsewhere / 'checkpoint/other.ckpt'}, {repo / 'checkpoint/other.ckpt'}" in str(err.value)
