"""Learned full-reference metrics: LPIPS (AlexNet, ``lpips`` package) and DISTS (``DISTS_pytorch``).

Both take images like :mod:`src.metrics.pixel` (float [0, 1] (B)CHW or uint8 (B)HWC), round
them to uint8 first, and return one float64 value per image (lower is better). Building
either one without its ImageNet weights raises :class:`~src.metrics.weights.MetricUnavailable`
naming the file and folder (see :mod:`src.metrics.weights`).
"""
from __future__ import annotations

import warnings

import torch

from src.metrics.pixel import ImageLike, to_uint8_grid
from src.metrics.weights import MetricUnavailable, load_or_explain


def _as_unit(img: ImageLike, device: torch.device) -> torch.Tensor:
    """uint8-rounded image as a float32 (B, C, H, W) tensor in [0, 1] on ``device``."""
    return (to_uint8_grid(img) / 255.0).to(device=device, dtype=torch.float32)


class LPIPSMetric:
    """LPIPS v0.1 with the AlexNet backbone, as used in the compression literature.

    Args:
        device: where to run the network.
        random_backbone: use an untrained backbone (tests only; the numbers mean nothing).
    """

    def __init__(self, device: str | torch.device = "cpu", random_backbone: bool = False):
        import lpips

        self.device = torch.device(device)

        def build():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # torchvision "pretrained" deprecation
                return lpips.LPIPS(net="alex", version="0.1", pnet_rand=random_backbone,
                                   verbose=False)

        self.net = load_or_explain("lpips", build).to(self.device).eval()

    @torch.no_grad()
    def __call__(self, x: ImageLike, y: ImageLike) -> torch.Tensor:
        """Per-image LPIPS, shape (B,)."""
        a, b = _as_unit(x, self.device), _as_unit(y, self.device)
        return self.net(a, b, normalize=True).flatten().to("cpu", torch.float64)


class DISTSMetric:
    """DISTS (Ding et al., TPAMI 2020) from the authors' ``DISTS_pytorch`` package.

    Needs torchvision's VGG16 ImageNet weights and the package's ``weights.pt`` (alpha/beta),
    which pip installs into ``sys.prefix``.
    """

    def __init__(self, device: str | torch.device = "cpu"):
        try:
            from DISTS_pytorch import DISTS
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise MetricUnavailable("metric 'dists' needs `pip install DISTS_pytorch`") from err
        self.device = torch.device(device)

        def build():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                return DISTS()

        self.net = load_or_explain("dists", build).to(self.device).eval()

    @torch.no_grad()
    def __call__(self, x: ImageLike, y: ImageLike) -> torch.Tensor:
        """Per-image DISTS, shape (B,). Order (reference, distorted) does not matter."""
        a, b = _as_unit(x, self.device), _as_unit(y, self.device)
        return self.net(a, b, batch_average=False).flatten().to("cpu", torch.float64)
