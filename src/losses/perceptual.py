"""LPIPS perceptual distance (Zhang et al. 2018) as a loss, via the ``lpips`` package."""
from __future__ import annotations

import os
import warnings
from typing import Optional

import torch
from torch import nn

from src.utils.registry import LOSSES

from .weighting import check_reduction, reduce_batch

#: torchvision's AlexNet file that ``lpips`` (net="alex") loads through torch.hub.
ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
_BACKBONE_FILES = {"alex": ALEXNET_FILE, "vgg": "vgg16-397923af.pth", "squeeze": "squeezenet1_1-b8a52dc0.pth"}


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
