"""The stage-2 validation set: seeded random crops of OpenImages' validation images.

Layout written by :func:`build_val_set` (``scripts/build_openimage_val_dataset.py``)::

    {save_root}/vq_{f8_n256}/crop_{256}_{num_img}_seed_{seed}/
        {stem}.png   the crop (RGB, crop_size x crop_size)
        {stem}.npy   its VQ indices, uint8 (crop_size/f x crop_size/f), from the configured VQGAN

:func:`load_val_set` reads such a folder (or any folder of equally sized images, whose indices
are then computed once by the caller) into memory as uint8 tensors.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import random
from pathlib import Path
from typing import Callable, Iterable, List, Optional, Tuple

import numpy as np
import torch
from PIL import Image

from src.utils.checkpoint import atomic_write
from src.utils.image_io import ImageReadError, list_images, load_rgb

log = logging.getLogger(__name__)


def val_set_dir(save_root: os.PathLike | str, vqgan_type: str, num_img: int, seed: int,
                crop_size: int = 256) -> Path:
    """``{save_root}/vq_f8_n256/crop_256_{num_img}_seed_{seed}`` for ``vqgan_type='f8-n256'``."""
    tag = "vq_" + vqgan_type.replace("-", "_")
    return Path(save_root) / tag / f"crop_{crop_size}_{num_img}_seed_{seed}"


def vqgan_type_of(vq_model) -> str:
    """``'f8-n256'`` style name of a built VQGAN (downsampling factor, codebook size)."""
    return f"f{vq_model.downsample_factor}-n{vq_model.n_embed}"


def seeded_crop(img: np.ndarray, size: int, seed: int, stem: str) -> np.ndarray:
    """A ``size x size`` crop whose position depends only on (seed, file stem).

    Independent of the order and of earlier files, so a resumed run crops alike.
    """
    rng = random.Random(f"{seed}:{stem}")
    h, w = img.shape[:2]
    top, left = rng.randint(0, h - size), rng.randint(0, w - size)
    return np.ascontiguousarray(img[top:top + size, left:left + size])


def save_crop(out_dir: Path, stem: str, crop: np.ndarray, indices: np.ndarray) -> None:
    """Write ``{stem}.png`` then ``{stem}.npy`` atomically (the .npy marks the pair complete)."""
    atomic_write(out_dir / f"{stem}.png", lambda p: Image.fromarray(crop).save(p, format="PNG"))
    dtype = np.uint8 if indices.max(initial=0) < 256 else np.uint16
    atomic_write(out_dir / f"{stem}.npy", lambda p: np.save(p, indices.astype(dtype)))


def is_done(out_dir: Path, stem: str) -> bool:
    """Both files of a crop exist."""
    return (out_dir / f"{stem}.png").is_file() and (out_dir / f"{stem}.npy").is_file()


@dataclasses.dataclass
class BuildStats:
    """What one build run did."""

    written: int = 0
    existing: int = 0
    small: int = 0
    bad: int = 0

    @property
    def done(self) -> int:
        return self.written + self.existing


def _candidates(files: List[Path], seed: int) -> List[Path]:
    """Source files in a seeded random order (the first usable ``num_img`` are taken)."""
    files = sorted(files)
    random.Random(seed).shuffle(files)
    return files


def _flush(pending: List[Tuple[str, np.ndarray]], out_dir: Path, encode_indices) -> int:
    """VQ-encode the pending crops as one batch and write them; returns how many."""
    if not pending:
        return 0
    batch = np.stack([c for _, c in pending])
    indices = encode_indices(batch)
    for (stem, crop), idx in zip(pending, indices):
        save_crop(out_dir, stem, crop, idx)
    n = len(pending)
    pending.clear()
    return n


def build_val_set(files: Iterable[Path], out_dir: Path, encode_indices, num_img: int, seed: int,
                  crop_size: int = 256, batch_size: int = 8, progress: bool = True) -> BuildStats:
    """Crop, VQ-encode and save the first ``num_img`` usable files (seeded order); resumable.

    ``encode_indices``: uint8 (B, S, S, 3) crops -> (B, S/f, S/f) integer indices.
    Crops already complete are counted and not rewritten; files whose short side is below
    ``crop_size`` are skipped; unreadable files are skipped with a warning.
    """
    from tqdm import tqdm

    out_dir.mkdir(parents=True, exist_ok=True)
    stats, pending = BuildStats(), []
    bar = tqdm(total=num_img, desc="val crops", unit="img", disable=not progress)
    for path in _candidates(list(files), seed):
        if stats.done + len(pending) >= num_img:
            break
        stem = path.stem
        if is_done(out_dir, stem):
            stats.existing += 1
            bar.update(1)
            continue
        try:
            img = load_rgb(path)
        except ImageReadError as e:
            stats.bad += 1
            log.warning("skipping unreadable image: %s", e)
            continue
        if min(img.shape[:2]) < crop_size:
            stats.small += 1
            log.debug("skipping %s: %dx%d is smaller than %d", path, img.shape[1], img.shape[0], crop_size)
            continue
        pending.append((stem, seeded_crop(img, crop_size, seed, stem)))
        if len(pending) >= batch_size:
            n = _flush(pending, out_dir, encode_indices)
            stats.written += n
            bar.update(n)
    n = _flush(pending, out_dir, encode_indices)
    stats.written += n
    bar.update(n)
    bar.close()
    return stats


def vq_index_encoder(vq_model, device: str | torch.device) -> Callable[[np.ndarray], np.ndarray]:
    """uint8 (B, H, W, 3) crops -> VQ indices (B, H/f, W/f) with a frozen VQGAN."""
    vq_model = vq_model.to(device).eval()

    @torch.no_grad()
    def encode(batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(batch).permute(0, 3, 1, 2).float().div(127.5).sub(1.0).to(device)
        return vq_model.encode(x)[1].cpu().numpy()

    return encode


@dataclasses.dataclass
class ValSet:
    """Images (N, 3, H, W) uint8 and VQ indices (N, h, w) long or None, in memory."""

    names: List[str]
    images: torch.Tensor
    indices: Optional[torch.Tensor]

    def __len__(self) -> int:
        return len(self.names)

    def batches(self, batch_size: int):
        """Yield (x in [-1, 1] float (B, 3, H, W), indices or None) on the CPU."""
        for i in range(0, len(self), batch_size):
            x = self.images[i:i + batch_size].float().div(127.5).sub(1.0)
            idx = None if self.indices is None else self.indices[i:i + batch_size]
            yield x, idx


def load_val_set(root: os.PathLike | str, max_images: Optional[int] = None) -> ValSet:
    """Read a folder of equally sized crops (+ ``.npy`` indices when every crop has one)."""
    files = list_images(root)[:max_images]
    if not files:
        raise FileNotFoundError(f"no images in {root}")
    imgs, idx = [], []
    for f in files:
        imgs.append(torch.from_numpy(load_rgb(f).copy()).permute(2, 0, 1))
        npy = f.with_suffix(".npy")
        idx.append(torch.from_numpy(np.load(npy).astype(np.int64)) if npy.is_file() else None)
    sizes = {tuple(t.shape) for t in imgs}
    if len(sizes) != 1:
        raise ValueError(f"{root}: images differ in size {sorted(sizes)}; the rate search batches "
                         "them, so use a crop folder from build_openimage_val_dataset.py")
    h, w = imgs[0].shape[-2:]
    if h % 64 or w % 64:
        raise ValueError(f"{root}: {w}x{h} images; DC-VIC needs sides that are multiples of 64")
    if any(i is None for i in idx):
        if any(i is not None for i in idx):
            log.warning("%s: some crops lack a .npy; VQ indices will be computed for all", root)
        indices = None
    else:
        indices = torch.stack(idx)
    return ValSet([f.stem for f in files], torch.stack(imgs), indices)
