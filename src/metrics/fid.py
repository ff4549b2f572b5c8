"""Patch FID and KID for image compression (as in HiFiC / MS-ILLM evaluation).

Each image is cut into 256x256 patches on a non-overlapping grid plus a second grid shifted by
half a patch (128 px) in both directions; Inception-v3 pool features (2048-d, pytorch-fid's
port of the TF FID network) of all real patches are compared with those of all reconstructed
patches. A 768x512 Kodak image gives 6 + 2 = 8 patches, so Kodak (24 images) gives 192.

* FID: Frechet distance between Gaussians fitted to both feature sets (pytorch-fid's).
* KID: unbiased MMD^2 with the cubic polynomial kernel, averaged over random subsets of size
  ``min(1000, n)`` (so that small sets such as Kodak's 192 patches still work) (torchmetrics').
"""
from __future__ import annotations

import contextlib
import io
import logging
import warnings

import numpy as np
import torch

from src.metrics.pixel import ImageLike, to_uint8_grid
from src.metrics.weights import load_or_explain

log = logging.getLogger(__name__)


def patch_positions(height: int, width: int, size: int = 256) -> list[tuple[int, int]]:
    """Top-left (y, x) corners: the aligned grid first, then the grid shifted by ``size // 2``."""
    out = []
    for offset in (0, size // 2):
        for top in range(offset, height - size + 1, size):
            for left in range(offset, width - size + 1, size):
                out.append((top, left))
    return out


def extract_patches(img: torch.Tensor, size: int = 256) -> torch.Tensor:
    """Cut a (C, H, W) or (1, C, H, W) tensor into (N, C, size, size) patches (:func:`patch_positions`)."""
    if img.ndim == 4:
        if img.shape[0] != 1:
            raise ValueError("extract_patches takes one image at a time")
        img = img[0]
    pos = patch_positions(img.shape[-2], img.shape[-1], size)
    if not pos:
        return img.new_zeros((0, img.shape[0], size, size))
    return torch.stack([img[:, t:t + size, l:l + size] for t, l in pos])


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """Frechet distance ``|mu1-mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))`` between two Gaussians, computed by
    pytorch-fid's ``calculate_frechet_distance`` in float64.

    A near-singular product (fewer samples than dimensions) gets ``eps * I`` added to both
    covariances (pytorch-fid prints that; here it is logged); a large imaginary part of the square
    root is a ValueError.
    """
    from pytorch_fid.fid_score import calculate_frechet_distance

    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    s1, s2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape:
        raise ValueError("mean vectors / covariances have different shapes")
    with contextlib.redirect_stdout(io.StringIO()) as printed, warnings.catch_warnings():
        # pytorch-fid 0.3 calls sqrtm(disp=False): deprecated, removed in SciPy 1.18 (pyproject keeps scipy < 1.18)
        warnings.filterwarnings("ignore", message="The `disp` argument is deprecated", category=DeprecationWarning)
        value = calculate_frechet_distance(mu1, s1, mu2, s2, eps=eps)
    if printed.getvalue().strip():
        log.debug("pytorch-fid: %s", printed.getvalue().strip())
    return float(value)


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased) covariance of an (N, D) feature matrix, N >= 2."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"need an (N >= 2, D) feature matrix, got {f.shape}")
    return f.mean(0), np.cov(f, rowvar=False)


def fid_from_features(real: np.ndarray, fake: np.ndarray) -> float:
    """FID between two (N, D) feature sets."""
    return frechet_distance(*gaussian_stats(real), *gaussian_stats(fake))


def kid_from_features(real: np.ndarray, fake: np.ndarray, num_subsets: int = 100,
                      max_subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """KID (mean, std over subsets) by torchmetrics' ``KernelInceptionDistance`` on given features:
    unbiased MMD^2 with the kernel ``(a.b / d + 1)^3``, subset size ``min(max_subset_size, len(real),
    len(fake))`` (so that small sets such as Kodak's 192 patches still work), subsets drawn with
    ``seed``.

    The estimator is unbiased for independent samples; for two *identical* sets (lossless
    reconstructions) it gives a small negative value of order ``-2 mean k(x, x) / n``.
    """
    from torchmetrics.image.kid import KernelInceptionDistance

    x = torch.as_tensor(np.asarray(real, np.float64))
    y = torch.as_tensor(np.asarray(fake, np.float64))
    size = min(max_subset_size, len(x), len(y))
    if size < 2:
        raise ValueError("KID needs at least 2 samples in each set")
    with warnings.catch_warnings():  # its note that it keeps every feature in memory: so do we
        warnings.filterwarnings("ignore", message=".*will save all extracted features", category=UserWarning)
        kid = KernelInceptionDistance(feature=torch.nn.Identity(), subsets=num_subsets, subset_size=size)
    kid.update(x, real=True)
    kid.update(y, real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = kid.compute()
    return float(mean), float(std)


class InceptionFeatures:
    """2048-d pool3 features of pytorch-fid's FID Inception-v3 (weights ``pt_inception-...pth``).

    Call it on a float [0, 1] (B)CHW or uint8 (B)HWC batch; images are uint8-rounded, then
    resized to 299x299 inside the network. Returns a float64 (B, 2048) numpy array.
    """

    def __init__(self, device: str | torch.device = "cpu", batch_size: int = 32):
        from pytorch_fid.inception import InceptionV3

        self.device, self.batch_size = torch.device(device), batch_size

        def build():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                return InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]])

        self.net = load_or_explain("fid/kid", build).to(self.device).eval()

    @torch.no_grad()
    def __call__(self, images: ImageLike) -> np.ndarray:
        x = to_uint8_grid(images) / 255.0
        out = []
        for i in range(0, x.shape[0], self.batch_size):
            batch = x[i:i + self.batch_size].to(self.device, torch.float32)
            out.append(self.net(batch)[0].flatten(1).to("cpu", torch.float64).numpy())
        return np.concatenate(out) if out else np.zeros((0, 2048))


class PatchFeatureBank:
    """Collects Inception features of the real and fake patches of many images."""

    def __init__(self, extractor, patch_size: int = 256):
        self.extractor, self.patch_size = extractor, patch_size
        self.real: list[np.ndarray] = []
        self.fake: list[np.ndarray] = []

    def add(self, real: ImageLike, fake: ImageLike) -> int:
        """Add one image pair; returns the number of patches it gave."""
        r = extract_patches(to_uint8_grid(real)[0] / 255.0, self.patch_size)
        f = extract_patches(to_uint8_grid(fake)[0] / 255.0, self.patch_size)
        if len(r):
            self.real.append(self.extractor(r))
            self.fake.append(self.extractor(f))
        return len(r)

    def features(self) -> tuple[np.ndarray, np.ndarray]:
        """(real, fake) feature matrices."""
        if not self.real:
            raise ValueError(f"no {self.patch_size}x{self.patch_size} patch fits in any image")
        return np.concatenate(self.real), np.concatenate(self.fake)
