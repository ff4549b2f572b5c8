"""Every experiment config under config/ resolves, and its model builds (DC-VIC ones at toy width)."""
from pathlib import Path

import pytest
import torch

import src.models  # noqa: F401
import src.trainer  # noqa: F401
from src.models.codec.loading import build_codec
from src.utils.config import Config, _merge, load_config
from src.utils.registry import SUBNETS, TRAINERS

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p for p in (ROOT / "config").rglob("*.yaml") if "_base_" not in p.parts)
TINY = load_config(ROOT / "config" / "_base_" / "model" / "dcvic_tiny.yaml").to_dict()


def test_there_are_configs():
    names = {p.stem for p in CONFIGS}
    assert {"exp1_stage1_1", "exp1_stage1_2", "exp1_stage1_3", "exp1_stage3", "dc_vic_patchgan",
            "dc_vic_oasis", "demo"} <= names


@pytest.mark.parametrize("path", [p for p in CONFIGS if "tokenizer" not in p.parts],
                         ids=lambda p: str(p.relative_to(ROOT / "config")))
def test_config_builds(path):
    cfg = load_config(path)
    if "trainer" in cfg:
        assert cfg.trainer.type in TRAINERS, cfg.trainer.type
    if "subnet" in cfg:
        cfg = Config(_merge(cfg.to_dict(), TINY, path))
        cfg.subnet.vq_model.ckpt_path = None
    with pytest.warns(UserWarning) if "subnet" in cfg else _nothing():
        model = build_codec(cfg)
    assert sum(p.numel() for p in model.parameters()) > 0
    if "discriminator" in cfg:
        disc = SUBNETS.build(cfg.discriminator.to_dict())
        out = disc(torch.zeros(1, 3, 64, 64), torch.zeros(1), torch.zeros(1))
        assert out.shape[0] == 1


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_published_configs_keep_the_published_sizes():
    cfg = load_config(ROOT / "config" / "exp1_stage1_2.yaml")
    assert cfg.subnet.encoder.main_ch == 192 and cfg.subnet.context_model.num_slices == 6
    assert cfg.subnet.encoder.max_beta_1 == 3.0 and cfg.subnet.encoder.max_beta_2 == 3.5
    assert cfg.loss.rate_loss.loss_weight == 0.5 and cfg.loss.code_ce_loss.loss_weight == 0.003
    assert load_config(ROOT / "config" / "exp1_stage3.yaml").model.selected_beta_rate == [2.29, 1.51, 1.12, 0.62, 0.16]
    assert load_config(ROOT / "config" / "exp1_stage1_3.yaml").load_checkpoint.exp == "exp1_stage1_2"
