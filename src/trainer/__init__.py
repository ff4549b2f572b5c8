"""Trainers, registered by name; ``trainer.type`` in a config picks one."""
from src.trainer.base_trainer import BaseTrainer, NonFiniteLossError
from src.trainer.dcvic_trainers import (DualBetaCondGanDistortionVqCodeTrainer,
                                        DualBetaCondOASISGanDistortionVqCodeTrainer,
                                        DualBetaCondRateDistortionVqCodeTrainer, RateDistortionVqCodeTrainer)
from src.trainer.demo_trainer import RateDistortionDemoTrainer
from src.trainer.tokenizer_trainer import VQGANTrainer
from src.trainer.zoo_trainers import ARTrainer, FeatureTokenizerTrainer, OneDTokenizerTrainer, PixelDecoderTrainer
from src.utils.registry import TRAINERS

__all__ = ["BaseTrainer", "NonFiniteLossError", "RateDistortionDemoTrainer", "RateDistortionVqCodeTrainer",
           "DualBetaCondRateDistortionVqCodeTrainer", "DualBetaCondGanDistortionVqCodeTrainer",
           "DualBetaCondOASISGanDistortionVqCodeTrainer", "VQGANTrainer", "FeatureTokenizerTrainer",
           "PixelDecoderTrainer", "OneDTokenizerTrainer", "ARTrainer", "TRAINERS", "build_trainer"]


def build_trainer(cfg, **kwargs) -> BaseTrainer:
    """Build ``cfg.trainer.type`` with the run options (``exp_name``, ``device``, ...)."""
    import src.models  # noqa: F401  (fills the model registries)

    name = cfg.get("trainer", {}).get("type")
    if name is None:
        raise KeyError("config has no trainer.type")
    return TRAINERS.get(name)(cfg, **kwargs)
