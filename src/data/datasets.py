"""Image datasets: OpenImages subsets, any folder of images, the bundled sample photos.

All datasets return ``{"image": 3 x H x W float in [-1, 1], "name": str}``.
A file that cannot be used (unreadable, truncated, smaller than the crop) never stops
a run: it is reported once with one warning line, counted in ``skipped``, and the next
usable file is returned in its place.
"""
from __future__ import annotations

import logging
import os
import random
import shutil
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from src.utils.image_io import ImageReadError, is_image_file, list_images, load_rgb, to_tensor
from src.utils.paths import looked_for, resolve_input
from src.utils.registry import DATASETS

log = logging.getLogger(__name__)

# Real photos shipped inside scikit-image (see docs: they need no download).
SAMPLE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry",
                 "hubble_deep_field", "motorcycle_left", "retina")


def export_sample_photos(folder: Path, names: Sequence[str] = SAMPLE_PHOTOS) -> List[Path]:
    """Write scikit-image's bundled colour photos to ``folder`` as PNG (skips existing files)."""
    try:
        from skimage import data as skdata
    except ImportError as e:  # pragma: no cover - dev extra missing
        raise ImportError("the sample photos come from scikit-image: pip install -e '.[dev]'") from e
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name in names:
        path = folder / f"{name}.png"
        if not path.exists():
            if name == "motorcycle_left":
                arr = skdata.stereo_motorcycle()[0]
            else:
                arr = getattr(skdata, name)()
            # a name of this process's own: two processes exporting at once must not share it
            tmp = path.with_suffix(f".{os.getpid()}.tmp.png")
            Image.fromarray(np.asarray(arr, dtype=np.uint8)).save(tmp)
            tmp.replace(path)
        written.append(path)
    return written


def has_images(folder: Path) -> bool:
    return folder.is_dir() and any(is_image_file(p) for p in folder.iterdir())


def fill_with_sample_photos(root: Path) -> None:
    """Fill an empty (or absent) ``root`` with all the sample photos at once: they are written to a
    folder of this process's own, which is then renamed to ``root``. Processes that start together
    (the ranks of a data-parallel run) thus each see none or all of them; when exporting into
    ``root`` itself, a rank once listed the other rank's half-written file and nothing else."""
    if root.is_dir() and any(root.iterdir()):      # other files, no images: fill it in place
        export_sample_photos(root)
        return
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.{os.getpid()}.tmp"
    try:
        export_sample_photos(tmp)
        try:
            os.rename(tmp, root)            # replaces an empty directory; fails on a filled one
        except OSError:
            if not has_images(root):        # not another process's photos: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def random_crop_flip(img: np.ndarray, size: Optional[int], rng: random.Random, flip: bool = True) -> np.ndarray:
    """A random ``size x size`` crop (None: whole image) and a random horizontal flip."""
    if size is not None:
        h, w = img.shape[:2]
        top = rng.randint(0, h - size)
        left = rng.randint(0, w - size)
        img = img[top:top + size, left:left + size]
    if flip and rng.random() < 0.5:
        img = img[:, ::-1]
    return img


class _SkippingImageDataset(Dataset):
    """Shared logic: a list of files, robust loading, skip-and-replace of bad files."""

    def __init__(self, files: List[Path], image_size: Optional[int], train: bool, seed: int = 0):
        if not files:
            raise FileNotFoundError("no image files found")
        self.files = files
        self.image_size = image_size
        self.train = train
        self.seed = seed
        self.skipped: Dict[str, str] = {}

    def __len__(self) -> int:
        return len(self.files)

    def _load(self, path: Path) -> np.ndarray:
        img = load_rgb(path)
        if self.image_size is not None and min(img.shape[:2]) < self.image_size:
            raise ImageReadError(f"{path}: {img.shape[1]}x{img.shape[0]} is smaller than the "
                                 f"{self.image_size}x{self.image_size} crop")
        return img

    def _skip(self, path: Path, reason: str) -> None:
        if str(path) not in self.skipped:
            self.skipped[str(path)] = reason
            log.warning("skipping image (%d skipped so far): %s", len(self.skipped), reason)

    def __getitem__(self, key):
        # ResumableSampler yields (index, stream position); the position seeds the crop.
        index, position = key if isinstance(key, tuple) else (key, key)
        for attempt in range(len(self.files)):
            path = self.files[(index + attempt) % len(self.files)]
            if str(path) in self.skipped:
                continue
            try:
                img = self._load(path)
            except ImageReadError as e:
                self._skip(path, str(e))
                continue
            if self.train:
                # Seeded by the stream position: identical crops on resume and in any worker.
                rng = random.Random(self.seed * 1_000_003 + position)
                img = random_crop_flip(img, self.image_size, rng)
            return {"image": to_tensor(img), "name": path.stem}
        raise RuntimeError(f"none of the {len(self.files)} images could be used; see the warnings above")


@DATASETS.register()
class ImageDataset(_SkippingImageDataset):
    """Images under ``root_dir``.

    With ``subset_list`` (OpenImages layout) the files are ``root_dir/train_{i}/*``;
    with ``split: validation`` they are ``root_dir/validation/*``; otherwise the folder
    itself (Kodak, CLIC, any folder); ``recursive: true`` also takes its sub-folders (ImageNet's
    class folders). ``image_size`` crops at random (training);
    ``None`` returns whole images. ``sample_photos: true`` fills an empty ``root_dir``
    with scikit-image's bundled photos first (offline quickstart; :func:`fill_with_sample_photos`).
    """

    def __init__(self, root_dir: str, image_size: Optional[int] = 256, subset_list: Optional[Sequence[int]] = None,
                 split: Optional[str] = None, train: bool = True, sample_photos: bool = False, seed: int = 0,
                 name: Optional[str] = None, resize_range=None, max_images: Optional[int] = None,
                 recursive: bool = False):
        root = resolve_input(root_dir, "dir")  # relative: the current directory, then the repository
        if sample_photos and not has_images(root):
            fill_with_sample_photos(root)
        if subset_list is not None:
            folders = [root / f"train_{i}" for i in subset_list]
        elif split is not None:
            folders = [root / split]
        else:
            folders = [root]
        missing = [str(f) for f in folders if not f.is_dir()]
        if missing:
            hint = (f" (root_dir looked for at: {looked_for(root_dir)}; edit root_dir / subset_list in the "
                    f"dataset config; see datasets/README.md)")
            raise FileNotFoundError(f"dataset {name or root}: folder(s) not found: {', '.join(missing)}{hint}")
        files = [p for folder in folders for p in list_images(folder, recursive)]
        if max_images is not None:
            files = files[:max_images]
        if not files:
            raise FileNotFoundError(f"dataset {name or root}: no image files in {', '.join(map(str, folders))}")
        self.name = name or root.name
        super().__init__(files, image_size if train else None, train, seed)


def build_dataset(cfg: dict, train: bool) -> Dataset:
    """Build a dataset section (``type`` + kwargs) of the config."""
    return DATASETS.build(cfg, train=train)


def collate_images(batch):
    return {"image": torch.stack([b["image"] for b in batch]), "name": [b["name"] for b in batch]}
