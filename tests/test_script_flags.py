"""Every documented flag of compress.py, decompress.py and eval_kodak.py does what its help says.

In-process ``main()`` calls on a random-weight toy DC-VIC (stage-3 config, with selected beta pairs)
and small crops of the bundled photos; what a flag changes is read back from the files it writes.
"""
import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from src.models.codec.bitstream import unpack_stream
from src.models.codec.loading import selected_betas
from src.utils.checkpoint import UntrustedCheckpointError
from src.utils.config import load_config
from tests.test_portable_tables import random_model_file

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "config" / "quickstart" / "stage3.yaml")
OPTS = ["subnet.vq_model.ckpt_path=null"]


def load_script(name):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"script_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


compress, decompress, eval_kodak = (load_script(n) for n in ("compress", "decompress", "eval_kodak"))


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return random_model_file(tmp_path_factory.mktemp("model") / "toy.pth.tar", True, CONFIG, OPTS)


@pytest.fixture(scope="module")
def images(tmp_path_factory, sample_dir):
    folder = tmp_path_factory.mktemp("img")
    for name in ("astronaut", "coffee"):
        arr = np.asarray(Image.open(sample_dir / f"{name}.png"))
        Image.fromarray(arr[100:164, 100:164]).save(folder / f"{name}.png")
    return folder


@pytest.fixture(scope="module")
def selection_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("sel") / "beta_selection_results.csv"
    pd.DataFrame({"target_rate": [0.1, 0.2], "selected_beta_vq": [3.0, 1.0],
                  "selected_beta_rate": [2.5, 0.5]}).to_csv(path, index=False)
    return path


def run_compress(model_file, images, out, *flags):
    args = ["--config_path", CONFIG, "--model_path", str(model_file), "--img_dir", str(images),
            "--save_dir", str(out), "-d", "cpu", *flags, "--opt", *OPTS]
    return compress.main(args)


def header_betas(path):
    """The betas a stream's header sends: two float32 values, or a quality index into the pairs."""
    header = unpack_stream(Path(path).read_bytes())[0]
    if header.quality is not None:
        return selected_betas(load_config(CONFIG, OPTS), header.quality)
    return header.beta_rate, header.beta_vq


def test_compress_rate_flags_choose_the_header_betas(model_file, images, selection_csv, tmp_path):
    cfg = load_config(CONFIG, OPTS)
    assert run_compress(model_file, images, tmp_path / "q", "-q", "1.5") == 0
    expected = selected_betas(cfg, 1.5)
    assert header_betas(tmp_path / "q" / "bin" / "astronaut.bin") == pytest.approx(expected, abs=1e-6)
    # --beta_rate/--beta_vq with the same pair write the same bytes; an exact selected pair is a quality index
    assert run_compress(model_file, images, tmp_path / "q1", "-q", "1") == 0
    assert unpack_stream((tmp_path / "q1" / "bin" / "astronaut.bin").read_bytes())[0].quality == 1
    assert header_betas(tmp_path / "q1" / "bin" / "astronaut.bin") == pytest.approx(selected_betas(cfg, 1), abs=1e-6)
    assert run_compress(model_file, images, tmp_path / "b", "--beta_rate", str(expected[0]),
                        "--beta_vq", str(expected[1])) == 0
    assert (tmp_path / "b" / "bin" / "astronaut.bin").read_bytes() == \
        (tmp_path / "q" / "bin" / "astronaut.bin").read_bytes()
    # --target_bpp halfway between the two selected targets interpolates both betas
    assert run_compress(model_file, images, tmp_path / "t", "--target_bpp", "0.15",
                        "--selection_csv", str(selection_csv)) == 0
    assert header_betas(tmp_path / "t" / "bin" / "coffee.bin") == pytest.approx((1.5, 2.0), abs=1e-6)
    for bad in (["--target_bpp", "0.15"], ["-q", "1", "--beta_rate", "1", "--beta_vq", "1"], ["--beta_rate", "1"]):
        with pytest.raises(SystemExit, match="error: give|needs --selection_csv"):
            run_compress(model_file, images, tmp_path / "bad", *bad)
    top = load_config(CONFIG).subnet.encoder.max_beta_1             # the toy range: quickstart_beta_range.yaml
    with pytest.raises(SystemExit, match=rf"outside the model's range \[0, {top}\] x \[0, 3.5\]"):
        run_compress(model_file, images, tmp_path / "bad", "--beta_rate", str(top + 0.2), "--beta_vq", "1")


def test_compress_output_and_limit_flags(model_file, images, tmp_path):
    assert run_compress(model_file, images, tmp_path / "plain", "-q", "0") == 0
    assert not (tmp_path / "plain" / "recon").exists()                       # no --decompress: no PNGs
    assert run_compress(model_file, images, tmp_path / "rec", "-q", "0", "--decompress") == 0
    assert sorted(p.name for p in (tmp_path / "rec" / "recon").iterdir()) == ["astronaut.png", "coffee.png"]
    assert run_compress(model_file, images, tmp_path / "side", "-q", "0", "--max_side", "32") == 0
    summary = json.loads((tmp_path / "side" / "_avg_bitrate.json").read_text())
    assert summary["num_images"] == 0 and all("--max_side" in v for v in summary["failed"].values())
    assert run_compress(model_file, images, tmp_path / "mp", "-q", "0", "--max_megapixels", "0.001") == 0
    summary = json.loads((tmp_path / "mp" / "_avg_bitrate.json").read_text())
    assert summary["num_images"] == 0 and all("--max_megapixels" in v for v in summary["failed"].values())
    assert run_compress(model_file, images, tmp_path / "x", "-q", "0", "--max_megapixels", "-1") == 2


def test_decompress_flags(model_file, images, tmp_path):
    assert run_compress(model_file, images, tmp_path / "enc", "-q", "0", "--decompress") == 0
    base = ["--config_path", CONFIG, "--model_path", str(model_file), "--bin_dir", str(tmp_path / "enc" / "bin"),
            "-d", "cpu"]
    assert decompress.main(base + ["--save_dir", str(tmp_path / "dec"), "--opt", *OPTS]) == 0
    for name in ("astronaut.png", "coffee.png"):                               # the sender's reconstruction
        assert np.array_equal(np.asarray(Image.open(tmp_path / "dec" / name)),
                              np.asarray(Image.open(tmp_path / "enc" / "recon" / name)))
    # a file declaring a side above --max_side is refused: nothing decoded, exit status 1
    assert decompress.main(base + ["--save_dir", str(tmp_path / "small"), "--max_side", "32", "--opt", *OPTS]) == 1
    assert not list((tmp_path / "small").glob("*.png"))


def test_trust_checkpoint_flag_of_compress_and_decompress(model_file, images, tmp_path):
    from src.utils.checkpoint import load_file

    released = tmp_path / "released.pth.tar"
    torch.save({**load_file(model_file), "args": argparse.Namespace(lr=1e-4)}, released)
    with pytest.raises(UntrustedCheckpointError, match="--trust_checkpoint"):
        run_compress(released, images, tmp_path / "no", "-q", "0")
    assert run_compress(released, images, tmp_path / "yes", "-q", "0", "--trust_checkpoint") == 0
    base = ["--config_path", CONFIG, "--model_path", str(released), "--bin_dir", str(tmp_path / "yes" / "bin"),
            "--save_dir", str(tmp_path / "dec"), "-d", "cpu"]
    with pytest.raises(UntrustedCheckpointError):
        decompress.main(base + ["--opt", *OPTS])
    assert decompress.main(base + ["--trust_checkpoint", "--opt", *OPTS]) == 0


def test_eval_kodak_flags(model_file, images, selection_csv, tmp_path):
    base = ["--config_path", CONFIG, "--model_path", str(model_file), "--img_dir", str(images), "-d", "cpu"]
    assert eval_kodak.main(base + ["--save_dir", str(tmp_path / "q"), "-q", "0", "1", "--metrics", "psnr",
                                   "--model_name", "toy", "--opt", *OPTS]) == 0
    rd = pd.read_csv(tmp_path / "q" / "rd.csv")
    assert rd["quality"].tolist() == [0, 1] and set(rd["model"]) == {"toy"}
    assert "psnr" in {c.lower() for c in rd.columns} and not {"lpips", "dists"} & {c.lower() for c in rd.columns}
    assert sorted(p.name for p in (tmp_path / "q").iterdir()) == ["point_0", "point_1", "rd.csv"]
    assert eval_kodak.main(base + ["--save_dir", str(tmp_path / "t"), "--target_bpp", "0.1", "0.2",
                                   "--selection_csv", str(selection_csv), "--metrics", "psnr", "--opt", *OPTS]) == 0
    rd = pd.read_csv(tmp_path / "t" / "rd.csv")
    assert rd["quality"].tolist() == [0.1, 0.2]
    assert rd["model"].tolist() == [Path(CONFIG).stem] * 2                   # default label: the config's name
    assert header_betas(next((tmp_path / "t" / "point_0.1").rglob("*.bin"))) == pytest.approx((2.5, 3.0))
    for bad in ([], ["-q", "0", "--target_bpp", "0.1"], ["--target_bpp", "0.1"]):
        with pytest.raises(SystemExit, match="error"):
            eval_kodak.main(base + ["--save_dir", str(tmp_path / "bad"), *bad, "--opt", *OPTS])
