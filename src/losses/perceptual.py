"""LPIPS perceptual distance (Zhang et al. 2018) as a loss, via the ``lpips`` package."""
from __future__ import annotations

import os
import warnings
from typing import Optional

import torch
from torch import nn

from src.utils.registry import LOSSES
from src.utils.weight_files import LPIPS_BACKBONES, TORCHVISION_FILES

from .weighting import check_reduction, reduce_batch

#: torchvision's AlexNet file that ``lpips`` (net="alex") loads through torch.hub.
ALEXNET_FILE = TORCHVISION_FILES["alexnet"]
_BACKBONE_FILES = {net: TORCHVISION_FILES[model] for net, model in LPIPS_BACKBONES.items()}


def _hub_checkpoint_dir() -> str:
    """Folder where torch.hub looks for backbone weights (usually ~/.cache/torch/hub/checkpoints/)."""
    return os.path.join(torch.hub.get_dir(), "checkpoints")


def build_lpips(net: str = "alex", pnet_rand: bool = False) -> nn.Module:
    """Build a frozen ``lpips.LPIPS`` or say which weight file is missing.

    The linear calibration layers ship with the package; the ImageNet backbone is
    downloaded by torchvision, which fails without internet. ``pnet_rand=True``
    uses a random backbone (tests only: the numbers then mean nothing).
    """
    import lpips

    try:
        with warnings.catch_warnings():  # torchvision's 'pretrained=' deprecation, raised inside lpips
            warnings.simplefilter("ignore", UserWarning)
            model = lpips.LPIPS(net=net, pnet_rand=pnet_rand, verbose=False)
    except Exception as e:  # URLError, HTTPError, RuntimeError from hub, ...
        fname = _BACKBONE_FILES.get(net, f"the torchvision {net} weights")
        raise RuntimeError(
            f"LPIPS({net!r}) could not load its pretrained backbone ({type(e).__name__}: {e}). "
            f"Without internet access, copy {fname} into {_hub_checkpoint_dir()}/ "
            f"(default ~/.cache/torch/hub/checkpoints/).") from e
    model.eval().requires_grad_(False)
    return model


@LOSSES.register()
class LPIPSLoss(nn.Module):
    """``loss_weight * LPIPS(target, pred)`` on images in [-1, 1].

    The network is frozen and always kept in eval mode (its dropout stays off).
    """

    def __init__(self, loss_weight: float = 1.0, reduction: str = "mean", net: str = "alex",
                 pnet_rand: bool = False):
        super().__init__()
        self.loss_weight = float(loss_weight)
        self.reduction = check_reduction(reduction)
        self.net = build_lpips(net, pnet_rand)

    def train(self, mode: bool = True) -> "LPIPSLoss":
        """Keep the LPIPS network in eval mode whatever the trainer asks."""
        super().train(mode)
        self.net.eval()
        return self

    def forward(self, target: torch.Tensor, pred: torch.Tensor,
                sample_weight: Optional[torch.Tensor] = None) -> torch.Tensor:
        dist = self.net(pred, target)  # (N, 1, 1, 1)
        return self.loss_weight * reduce_batch(dist, self.reduction, sample_weight)


def build_classifier(name: str = "convnext_small", pretrained: bool = True) -> nn.Module:
    """A frozen torchvision ImageNet classifier, or a message naming the weight file it lacks."""
    from torchvision import models

    weights = models.get_model_weights(name).DEFAULT if pretrained else None
    try:
        net = models.get_model(name, weights=weights)
    except Exception as e:  # URLError, HTTPError, RuntimeError from hub, ...
        fname = weights.url.rsplit("/", 1)[-1]
        raise RuntimeError(
            f"{name} could not load its ImageNet weights ({type(e).__name__}: {e}). Without internet "
            f"access, copy {fname} (from {weights.url}) into {_hub_checkpoint_dir()}/ "
            f"(default ~/.cache/torch/hub/checkpoints/).") from e
    return net.eval().requires_grad_(False)


@LOSSES.register()
class ConvNeXtPerceptualLoss(nn.Module):
    """``loss_weight * MSE(f(pred), f(target))`` with ``f`` the class logits of a frozen ImageNet
    classifier (ConvNeXt-S by default) on images in [-1, 1] resized to ``resize`` and normalised
    with the ImageNet statistics.

    The "perceptual loss" of the 1D tokenizer's training (used beside or instead of LPIPS):
    matching a classifier's logits keeps reconstructions semantically faithful. ``pretrained:
    false`` gives a random network (tests only: the numbers then mean nothing).
    """

    MEAN = (0.485, 0.456, 0.406)
    STD = (0.229, 0.224, 0.225)

    def __init__(self, loss_weight: float = 1.0, model: str = "convnext_small", pretrained: bool = True,
                 resize: Optional[int] = 224):
        super().__init__()
        self.loss_weight, self.resize = float(loss_weight), resize
        self.net = build_classifier(model, pretrained)
        self.register_buffer("mean", torch.tensor(self.MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(self.STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> "ConvNeXtPerceptualLoss":
        super().train(mode)
        self.net.eval()
        return self

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        x = (x.float() + 1) / 2
        if self.resize and tuple(x.shape[-2:]) != (self.resize, self.resize):
            x = torch.nn.functional.interpolate(x, size=(self.resize, self.resize), mode="bilinear",
                                                align_corners=False, antialias=True)
        return self.net((x - self.mean) / self.std)

    def forward(self, target: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            ref = self.logits(target)
        return self.loss_weight * torch.nn.functional.mse_loss(self.logits(pred), ref)
