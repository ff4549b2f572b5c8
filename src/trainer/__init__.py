"""Trainers, registered by name; ``trainer.type`` in a config picks one."""
from src.trainer.base_trainer import BaseTrainer, NonFiniteLossError
from src.trainer.dcvic_trainers import RECIPES, DCVICTrainer, Recipe
from src.trainer.demo_trainer import RateDistortionDemoTrainer
from src.trainer.tokenizer_trainer import VQGANTrainer
from src.trainer.zoo_trainers import ARTrainer, FeatureTokenizerTrainer, OneDTokenizerTrainer, PixelDecoderTrainer
from src.utils.registry import TRAINERS

__all__ = ["BaseTrainer", "NonFiniteLossError", "RateDistortionDemoTrainer", "DCVICTrainer", "Recipe", "RECIPES",
           "VQGANTrainer", "FeatureTokenizerTrainer",
           "PixelDecoderTrainer", "OneDTokenizerTrainer", "ARTrainer", "TRAINERS", "build_trainer", "run_training"]


def build_trainer(cfg, **kwargs) -> BaseTrainer:
    """Build ``cfg.trainer.type`` with the run options (``exp_name``, ``device``, ...)."""
    import src.models  # noqa: F401  (fills the model registries)

    name = cfg.get("trainer", {}).get("type")
    if name is None:
        raise KeyError("config has no trainer.type")
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
