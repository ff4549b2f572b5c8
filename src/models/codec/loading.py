"""Build a codec from a config and load trained or released weights for inference."""
from __future__ import annotations

import logging
import os
from typing import Optional, Sequence

import torch
from torch import nn

from src.utils.checkpoint import load_model_state, model_state_from_file
from src.utils.config import Config, load_config

log = logging.getLogger(__name__)


def build_codec(cfg: Config) -> nn.Module:
    """The model of a config (``model`` + ``subnet`` sections for DC-VIC, ``model`` alone otherwise)."""
    import src.models  # noqa: F401  (fills the registries)
    from src.utils.registry import MODELS

    model_cfg = cfg.model.to_dict()
    if "subnet" in cfg:
        return MODELS.build(model_cfg, subnet=cfg.subnet.to_dict())
    return MODELS.build(model_cfg)


def load_codec(config_path: str | os.PathLike, model_path: Optional[str | os.PathLike], device: str = "cpu",
               overrides: Sequence[str] = (), strict: bool = True, trust: bool = False) -> tuple[nn.Module, Config]:
    """Config + checkpoint (ours, or a released ``.pth.tar`` with ``comp_model``) -> eval-mode model.

    ``model_path=None`` keeps the random initialisation (tests and smoke runs only). Both files (the
    model and the VQGAN of ``subnet.vq_model.ckpt_path``) are read without running code from them;
    ``trust=True`` unpickles them fully (only for files from a source you trust).
    The entropy coder's tables (CDFs, offsets, lengths, scale table) are used as the file stores
    them, so that every machine codes with the same tables; a file without them (a checkpoint
    saved before any table was built) gets them built here, on the CPU, with a warning.
    """
    cfg = load_config(config_path, list(overrides))
    if trust and "vq_model" in cfg.get("subnet", {}):
        cfg.subnet.vq_model.trust = True
    model = build_codec(cfg)
    if model_path is not None:
        state = model_state_from_file(model_path, trust=trust)
        if hasattr(model, "vq_model") and not any(k.startswith("vq_model.") for k in state):
            # checkpoints may leave out the frozen VQGAN; it then comes from subnet.vq_model.ckpt_path
            state = {**{f"vq_model.{k}": v for k, v in model.vq_model.state_dict().items()}, **state}
        load_model_state(model, state, strict=strict, source=str(model_path))
    else:
        log.warning("no --model_path given: the codec is RANDOMLY INITIALISED")
    model.eval()
    if model_path is not None and not has_entropy_tables(model):
        log.warning("%s stores no entropy-coding tables: building them on this machine. Tables built on "
                    "different machines can differ in their last bits, and a stream only decodes with the "
                    "tables it was made with: write them into the file once with scripts/export_model.py "
                    "and use that file everywhere", model_path)
    model.update(force=False)
    return model.to(torch.device(device)), cfg


def has_entropy_tables(model: nn.Module) -> bool:
    """True when every CompressAI entropy model in ``model`` holds built CDF tables."""
    from compressai.entropy_models import EntropyModel

    models = [m for m in model.modules() if isinstance(m, EntropyModel)]
    return bool(models) and all(m._offset.numel() > 0 and m._quantized_cdf.numel() > 0 for m in models)


def selected_betas(cfg: Config, quality: float) -> tuple[float, float]:
    """Beta pair of a (possibly fractional) quality index into the config's selected pairs
    (:meth:`src.models.codec.betas.BetaSpace.pair`: a fractional index interpolates)."""
    from src.models.codec.betas import BetaSpace

    return BetaSpace.from_config(cfg.model, cfg.get("subnet")).pair(quality)
