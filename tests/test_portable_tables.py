"""The entropy coder's tables travel with the model file; a desynchronised decode is an error.

A receiver that rebuilt the tables itself (compressai's ``update(force=True)``) got other scale
tables under other CPU kernels (``ATEN_CPU_CAPABILITY=default``) and refused every stream as made
by another model. Now the tables are built once (when a checkpoint is saved, or by
scripts/export_model.py) and used as stored.
"""
import json
import logging
import os
import subprocess
import sys

import pytest
import torch

from src.models.codec.bitstream import CorruptBitstreamError
from src.models.codec.image_coder import ImageCoder
from src.models.codec.loading import build_codec, has_entropy_tables, load_codec
from src.utils.config import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "config", "quickstart", "stage1_2.yaml")
OPTS = ["subnet.vq_model.ckpt_path=null"]
TABLES = ("entropy_model_z._quantized_cdf", "entropy_model_z._offset", "entropy_model_y._quantized_cdf",
          "entropy_model_y.scale_table")


def random_model_file(path, with_tables: bool, config=CONFIG, opts=OPTS):
    """A model file (``{"comp_model": state dict}``) of ``config`` with seeded random weights, and with
    the entropy coder's tables when ``with_tables``."""
    torch.manual_seed(0)
    model = build_codec(load_config(config, opts))
    if with_tables:
        model.update(force=True)
    torch.save({"comp_model": model.state_dict()}, path)
    return path


@pytest.fixture
def crop(photo):
    return photo[:, :, :64, :64].contiguous()


def test_trainer_saves_the_tables_of_the_weights_it_saves(tmp_path, sample_dir):
    from src.trainer import build_trainer

    cfg = load_config(CONFIG, [f"ckpt_dir={tmp_path}", *OPTS, f"dataset.train_dataset.root_dir={sample_dir}",
                               "eval_step=null", "total_iter=2", "save_step=2", "+load_checkpoint=null"])
    build_trainer(cfg, exp_name="t", device="cpu").train()
    path = tmp_path / "t" / "model" / "comp_model_iter2.pth.tar"
    model, _ = load_codec(CONFIG, path, "cpu", OPTS)
    assert has_entropy_tables(model)
    stored = {k: v.clone() for k, v in model.state_dict().items() if k in TABLES}
    model.update(force=True)                                   # rebuilt from the saved weights, here
    assert all(torch.equal(stored[k], model.state_dict()[k]) for k in TABLES)


def test_a_file_without_tables_gets_them_with_a_warning_and_export_writes_them(tmp_path, caplog, capsys):
    from scripts import export_model

    bare = random_model_file(tmp_path / "bare.pth.tar", with_tables=False)
    with caplog.at_level(logging.WARNING):
        model, _ = load_codec(CONFIG, bare, "cpu", OPTS)
    assert has_entropy_tables(model) and "stores no entropy-coding tables" in caplog.text
    out = tmp_path / "coding" / "model.pth.tar"
    assert export_model.main(["--config_path", CONFIG, "--model_path", str(bare), "--out", str(out),
                              "--opt", *OPTS]) == 0
    printed = capsys.readouterr().out
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        exported, _ = load_codec(CONFIG, out, "cpu", OPTS)
    assert "stores no entropy-coding tables" not in caplog.text
    assert ImageCoder(exported).fingerprint.hex() in printed
    assert export_model.main(["--config_path", CONFIG, "--model_path", str(out), "--out", str(out)]) == 2


CHILD = r"""
import json, sys, torch
from src.models.codec.image_coder import ImageCoder
from src.models.codec.loading import load_codec
model, _ = load_codec(sys.argv[1], sys.argv[2], "cpu", ["subnet.vq_model.ckpt_path=null"])
coder = ImageCoder(model)
x_hat, _ = coder.decode(open(sys.argv[3], "rb").read())
print(json.dumps({"fingerprint": coder.fingerprint.hex(), "x_hat": x_hat.flatten()[:64].tolist()}))
"""


def test_receiver_with_other_cpu_kernels_decodes_with_the_stored_tables(tmp_path, crop):
    path = random_model_file(tmp_path / "model.pth.tar", with_tables=True)
    model, _ = load_codec(CONFIG, path, "cpu", OPTS)
    coder = ImageCoder(model)
    stream = tmp_path / "crop.bin"
    stream.write_bytes(coder.encode(crop, 1.5, 1.75).data)
    env = dict(os.environ, ATEN_CPU_CAPABILITY="default", OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    res = subprocess.run([sys.executable, "-c", CHILD, CONFIG, str(path), str(stream)], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    child = json.loads(res.stdout.strip().splitlines()[-1])
    assert child["fingerprint"] == coder.fingerprint.hex()
    x_hat, _ = coder.decode(stream.read_bytes())
    assert torch.allclose(torch.tensor(child["x_hat"]), x_hat.flatten()[:64], atol=2e-3)


def test_a_receiver_whose_entropy_parameters_differ_reports_a_desync(tmp_path, crop):
    path = random_model_file(tmp_path / "model.pth.tar", with_tables=True)
    sender = ImageCoder(load_codec(CONFIG, path, "cpu", OPTS)[0])
    data = sender.encode(crop, 0.0, 1.75).data
    receiver = ImageCoder(load_codec(CONFIG, path, "cpu", OPTS)[0])
    assert receiver.fingerprint == sender.fingerprint
    receiver.decode(data)                                      # same parameters: decodes
    with torch.no_grad():                                      # what other arithmetic would do, much magnified
        for transform in receiver.model.context_model.scale_slice_transforms:
            list(transform.parameters())[-1].add_(1.5)
    with pytest.raises(CorruptBitstreamError, match="entropy decoding failed|check value"):
        receiver.decode(data)
