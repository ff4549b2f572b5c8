"""No code runs from a checkpoint file: hostile pickles are refused or read inert, ours load weights-only."""
import argparse
import random

import numpy as np
import pytest
import torch

from src.models.vq.vqgan import InertGlobal, load_checkpoint_file, vq_state_dict
from src.utils.checkpoint import (UntrustedCheckpointError, load_file, model_state_from_file, rng_state,
                                  set_rng_state)


class Payload:
    """Unpickling this runs ``exec``: it writes a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('code ran')",)


class FakeCallback:
    """Stands for a Lightning callback pickled into an official checkpoint."""

    def __init__(self):
        self.best = torch.tensor(0.5)


@pytest.fixture
def payload_file(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pth.tar"
    torch.save({"comp_model": {"w": torch.zeros(2)}, "extra": Payload(marker)}, path)
    return path, marker


def test_own_loader_refuses_a_payload_and_names_the_file(payload_file):
    path, marker = payload_file
    with pytest.raises(UntrustedCheckpointError, match="evil.pth.tar") as e:
        load_file(path)
    assert "trust=True" in str(e.value)
    with pytest.raises(UntrustedCheckpointError):
        model_state_from_file(path)            # the codec's --model_path and load_checkpoint path
    assert not marker.exists()


def test_vqgan_loader_reads_a_payload_inert(payload_file):
    path, marker = payload_file
    ckpt = load_checkpoint_file(str(path))
    assert not marker.exists()
    assert isinstance(ckpt["extra"], InertGlobal)
    assert torch.equal(ckpt["comp_model"]["w"], torch.zeros(2))


def test_lightning_layout_file_still_gives_its_weights(tmp_path):
    weights = {"encoder.conv.weight": torch.randn(4, 3, 3, 3), "loss.disc.weight": torch.randn(2)}
    ckpt = {"epoch": 3, "global_step": 1000, "state_dict": weights,
            "callbacks": {FakeCallback: FakeCallback()}, "hyper_parameters": argparse.Namespace(lr=1e-4),
            "optimizer_states": [{"state": {0: {"exp_avg": torch.ones(3)}}, "param_groups": [{"lr": 1e-4}]}]}
    path = tmp_path / "last.ckpt"
    torch.save(ckpt, path)
    with pytest.raises(Exception):
        torch.load(path, weights_only=True)     # not a weights-only file
    state = vq_state_dict(load_checkpoint_file(str(path)))
    assert list(state) == ["encoder.conv.weight"] and torch.equal(state["encoder.conv.weight"],
                                                                  weights["encoder.conv.weight"])


def test_rng_state_is_weights_only_and_restores_exactly(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    path = tmp_path / "rng.pth"
    torch.save({"rng": rng_state(), "config": {"model": {"N": 32}, "milestones": [1, 2]}}, path)
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    loaded = torch.load(path, weights_only=True)           # plain types only
    set_rng_state(loaded["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_old_checkpoints_with_numpy_rng_still_load(tmp_path):
    np.random.seed(5)
    old = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    path = tmp_path / "old.pth.tar"
    torch.save({"comp_model": {"w": torch.ones(1)}, "rng": old}, path)
    expected = np.random.rand()
    set_rng_state(load_file(path)["rng"])
    assert np.random.rand() == expected


def test_trust_checkpoint_flag_is_the_only_way_to_unpickle_a_model_file(tmp_path):
    """A released-style model file that also pickles a Namespace (harmless, but not weights-only) is
    refused by the scripts unless --trust_checkpoint is given; with it, the weights load."""
    import os

    from scripts import export_model
    from src.models.codec.loading import build_codec
    from src.utils.config import load_config

    config = os.path.join(os.path.dirname(os.path.dirname(__file__)), "config", "quickstart", "stage1_2.yaml")
    opts = ["subnet.vq_model.ckpt_path=null"]
    model = build_codec(load_config(config, opts))
    path = tmp_path / "released.pth.tar"
    torch.save({"comp_model": model.state_dict(), "args": argparse.Namespace(lr=1e-4)}, path)
    args = ["--config_path", config, "--model_path", str(path), "--out", str(tmp_path / "out.pth.tar"), "--opt", *opts]
    with pytest.raises(UntrustedCheckpointError, match="--trust_checkpoint"):
        export_model.main(args)
    assert export_model.main(args + ["--trust_checkpoint"]) == 0
    assert set(load_file(tmp_path / "out.pth.tar")) == {"comp_model", "fingerprint"}   # weights-only now


def test_a_payload_runs_through_no_loader_entry_point(tmp_path, sample_dir):
    """The payload file as --model_path, as the VQGAN ckpt_path, as a load_checkpoint step, as the
    newest checkpoint auto-resume would pick, and as a tokenizer checkpoint: never executed; our own
    loaders refuse it naming the file and the flag."""
    import os

    from src.models.codec.loading import load_codec
    from src.models.vq.vqgan import build_pretrained_vq_model
    from src.trainer import build_trainer
    from src.utils.checkpoint import checkpoint_path
    from src.utils.config import load_config
    from src.zoo.tools import _read_checkpoint
    from src.zoo.trainers import read_tokenizer_checkpoint

    root = os.path.dirname(os.path.dirname(__file__))
    marker = tmp_path / "marker"
    payload = {"comp_model": {"w": torch.zeros(2)}, "extra": Payload(marker)}
    evil = tmp_path / "evil.pth.tar"
    torch.save(payload, evil)
    codec_cfg = os.path.join(root, "config", "quickstart", "stage1_2.yaml")
    with pytest.raises(UntrustedCheckpointError, match="evil.pth.tar.*--trust_checkpoint"):
        load_codec(codec_cfg, evil, "cpu", ["subnet.vq_model.ckpt_path=null"])
    vq = load_config(codec_cfg, []).subnet.vq_model.to_dict()
    with pytest.raises(Exception):                     # read inert, then no VQGAN weights in it
        build_pretrained_vq_model(**{**vq, "ckpt_path": str(evil)})

    def demo(**extra):
        opts = [f"ckpt_dir={tmp_path / 'ckpt'}", f"dataset.train_dataset.root_dir={sample_dir}", "model.N=8",
                "model.M=8", "eval_step=null", "total_iter=2"] + [f"{k}={v}" for k, v in extra.items()]
        return load_config(os.path.join(root, "config", "quickstart", "demo.yaml"), opts)

    for exp in ("prev", "run"):
        path = checkpoint_path(tmp_path / "ckpt", exp, 2)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(payload, path)
    with pytest.raises(UntrustedCheckpointError, match="comp_model_iter2"):
        build_trainer(demo(**{"+load_checkpoint": "{exp: prev, iter: 2}"}), exp_name="next", device="cpu")
    with pytest.raises(UntrustedCheckpointError, match="comp_model_iter2"):
        build_trainer(demo(), exp_name="run", device="cpu")          # auto-resume
    with pytest.raises(UntrustedCheckpointError):
        read_tokenizer_checkpoint(str(evil))
    assert "comp_model" in _read_checkpoint(evil)                    # official-file fallback: inert
    assert not marker.exists()
