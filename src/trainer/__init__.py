"""Trainers, registered by name; ``trainer.type`` in a config picks one.

The codec's trainers (DC-VIC steps, the demo) and the VQGAN prior's trainer register here; the
tokenizer zoo's trainers (``FeatureTokenizerTrainer``, ``PixelDecoderTrainer``,
``OneDTokenizerTrainer``, ``ARTrainer``) register when :func:`src.zoo.register` runs
(``scripts/train.py`` calls it). This package never imports :mod:`src.zoo`."""
from src.trainer.base_trainer import BaseTrainer, NonFiniteLossError
from src.trainer.dcvic_trainers import RECIPES, DCVICTrainer, Recipe
from src.trainer.demo_trainer import RateDistortionDemoTrainer
from src.trainer.vqgan_trainer import VQGANTrainer
from src.utils.registry import TRAINERS

__all__ = ["BaseTrainer", "NonFiniteLossError", "RateDistortionDemoTrainer", "DCVICTrainer", "Recipe", "RECIPES",
           "VQGANTrainer", "TRAINERS", "build_trainer", "run_training"]


def build_trainer(cfg, **kwargs) -> BaseTrainer:
    """Build ``cfg.trainer.type`` with the run options (``exp_name``, ``device``, ...).

    A tokenizer-zoo trainer is known only once :func:`src.zoo.register` has run; an unknown
    type raises a KeyError that says so."""
    import src.models  # noqa: F401  (fills the model registries)

    name = cfg.get("trainer", {}).get("type")
    if name is None:
        raise KeyError("config has no trainer.type")
    if name not in TRAINERS:
        known = ", ".join(TRAINERS.names())
        raise KeyError(f"unknown trainer type {name!r}; known trainers: {known}. The tokenizer zoo's trainers "
                       f"register when the zoo is imported: call src.zoo.register() first (scripts/train.py does)")
    return TRAINERS.get(name)(cfg, **kwargs)


def run_training(cfg, exp_name: str, device: str, **kwargs) -> int:
    """What the training scripts do: refuse a CUDA device that is absent (exit status 2), build
    the trainer (``kwargs`` as :func:`build_trainer`), train, and leave the process group."""
    import sys

    import torch

    from src.utils import dist

    if device.startswith("cuda") and not torch.cuda.is_available():
        print(f"error: device {device!r} requested but CUDA is not available; use -d cpu", file=sys.stderr)
        return 2
    trainer = build_trainer(cfg, exp_name=exp_name, device=device, **kwargs)
    try:
        trainer.train()
    finally:
        dist.cleanup()
    return 0
