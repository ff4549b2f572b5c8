"""Cached FID reference statistics (the seed's "FID caches") and generation FID against them.

Heusel et al., "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash
Equilibrium" (FID), NeurIPS 2017, with pytorch-fid's Inception-v3 (:class:`InceptionFeatures`).
The reference set's ``mu`` and ``sigma`` are computed once (``scripts/fid_cache.py``) and stored as
``.npz`` (``mu``, ``sigma``, ``num_images``, ``size``, ``source``); validation then only extracts
features of the generated images. Offline, InceptionFeatures raises ``MetricUnavailable`` naming
the weight file and folder. (These functions belong in ``src/metrics``; they live here for now.)
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import torch

from src.metrics.fid import frechet_distance, gaussian_stats
from src.utils.image_io import iter_images

log = logging.getLogger(__name__)


def reference_stats(images, extractor, size: Optional[int] = 256, max_images: Optional[int] = None,
                    batch_size: int = 32) -> Dict[str, Any]:
    """``mu``, ``sigma`` of the Inception features of a folder of images (resized / centre-cropped
    to ``size`` as :func:`src.utils.image_io.prepare_image` does; None keeps whole images, which
    then go one at a time)."""
    feats, batch = [], []
    for _, arr in iter_images(Path(images), size, max_images):
        batch.append(torch.from_numpy(np.ascontiguousarray(arr)))
        if len(batch) == batch_size or size is None:
            feats.append(extractor(torch.stack(batch)))
            batch = []
    if batch:
        feats.append(extractor(torch.stack(batch)))
    features = np.concatenate(feats)
    mu, sigma = gaussian_stats(features)
    return {"mu": mu, "sigma": sigma, "num_images": len(features), "size": -1 if size is None else size,
            "source": str(images)}


def save_fid_cache(stats: Dict[str, Any], path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **{k: np.asarray(v) for k, v in stats.items()})
    tmp.replace(path)
    return path


def load_fid_cache(path: Path) -> Dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"FID cache {path} not found; write it with scripts/fid_cache.py --images FOLDER "
                                f"--out {path}")
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def fid_to_cache(features: np.ndarray, cache: Dict[str, Any]) -> float:
    """FID between generated features (N >= 2, 2048) and the cached reference statistics."""
    mu, sigma = gaussian_stats(features)
    return frechet_distance(mu, sigma, cache["mu"], cache["sigma"])
