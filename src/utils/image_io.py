"""Reading and writing images robustly (Pillow).

:func:`load_rgb` turns whatever a folder holds into an 8-bit RGB array or raises
:class:`ImageReadError` with the file name and the reason: greyscale, greyscale+alpha,
RGBA, palette, CMYK and 16-bit images are converted; EXIF orientation is applied;
unreadable, truncated, empty or non-image files are refused.
"""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple, Union

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm")

PathLike = Union[str, os.PathLike]


class ImageReadError(IOError):
    """An image file that cannot be decoded into RGB pixels."""


def is_image_file(path: PathLike) -> bool:
    return str(path).lower().endswith(IMAGE_EXTENSIONS)


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit greyscale: scale the full integer range down to 8 bits.
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if arr.max() > 255 or img.mode.startswith("I;16") else 255.0
        arr = np.clip(np.round(arr / peak * 255.0), 0, 255).astype(np.uint8)
        img = Image.fromarray(arr, mode="L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    return img.convert("RGB")


def load_rgb(path: PathLike, max_pixels: Optional[int] = None, max_side: Optional[int] = None) -> np.ndarray:
    """Read ``path`` as an ``H x W x 3`` uint8 array (alpha composited on white).

    ``max_pixels`` / ``max_side``: refuse larger images from the header, before any pixel is decoded
    (Pillow's own limit, ~179 MP, lets through images that take minutes and gigabytes to code)."""
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise ImageReadError(f"{path}: empty file (0 bytes)")
        with Image.open(path) as img:
            w, h = img.size
            if max_side is not None and max(w, h) > max_side:
                raise ImageReadError(f"{path}: {w}x{h} px has a side above the {max_side} px a decoder accepts "
                                     "by default (raise both with --max_side)")
            if max_pixels is not None and w * h > max_pixels:
                raise ImageReadError(f"{path}: {w}x{h} px is {w * h / 1e6:.1f} megapixels, above the limit of "
                                     f"{max_pixels / 1e6:g} (raise it with --max_megapixels)")
            img.load()
            img = ImageOps.exif_transpose(img)
            rgb = _to_rgb(img)
    except ImageReadError:
        raise
    except UnidentifiedImageError as e:
        raise ImageReadError(f"{path}: not an image Pillow can read") from e
    except Image.DecompressionBombError as e:
        raise ImageReadError(f"{path}: refused as a decompression bomb ({e})") from e
    except (OSError, ValueError, SyntaxError) as e:
        raise ImageReadError(f"{path}: cannot decode image ({e})") from e
    arr = np.asarray(rgb, dtype=np.uint8)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageReadError(f"{path}: decoded to an unexpected shape {arr.shape}")
    return arr


def image_size(path: PathLike) -> tuple:
    """(width, height) as :func:`load_rgb` returns the image (EXIF rotation applied), from the header only."""
    try:
        with Image.open(path) as img:
            w, h = img.size
            if img.getexif().get(0x0112) in (5, 6, 7, 8):  # orientations that swap the axes
                w, h = h, w
    except (OSError, ValueError, SyntaxError) as e:
        raise ImageReadError(f"{path}: cannot read image header ({e})") from e
    return w, h


def to_tensor(arr: np.ndarray) -> torch.Tensor:
    """uint8 ``H x W x 3`` -> float ``3 x H x W`` in [-1, 1]."""
    t = torch.from_numpy(np.array(arr, dtype=np.uint8, copy=True)).permute(2, 0, 1).float()
    return t / 127.5 - 1.0


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float ``3 x H x W`` in [-1, 1] -> uint8 ``H x W x 3`` (rounded, clamped)."""
    x = ((x.detach().float().cpu().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return x.permute(1, 2, 0).numpy()


def save_rgb(x: Union[torch.Tensor, np.ndarray], path: PathLike) -> None:
    """Save a ``3 x H x W`` tensor in [-1, 1] or an ``H x W x 3`` uint8 array as an image."""
    arr = to_uint8(x) if isinstance(x, torch.Tensor) else x
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def not_a_file_reason(path: PathLike) -> Optional[str]:
    """Why ``path`` is no regular file to read (a directory, a dangling link, a link loop...), or None."""
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "a symlink loop"
        if os.path.islink(path):
            return "a dangling symlink"
        return f"cannot be read ({e.strerror})"
    if stat.S_ISREG(mode):
        return None
    return "a directory" if stat.S_ISDIR(mode) else "not a regular file"


def scan_images(folder: PathLike, recursive: bool = False) -> Tuple[List[Path], Dict[str, str]]:
    """Image files of ``folder`` (sorted, as :func:`list_images`), and the entries left out.

    The second value maps each entry that has an image extension but is no regular file
    (a directory named like ``x.png``, a dangling symlink, a symlink loop, a FIFO...) to the
    reason; entries without an image extension are ignored, as before. A symlink to an image
    file is an image file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    found = folder.rglob("*") if recursive else folder.iterdir()
    files, skipped = [], {}
    for p in sorted(found):
        if not is_image_file(p):
            continue
        reason = not_a_file_reason(p)
        if reason is None:
            files.append(p)
        else:
            skipped[str(p.relative_to(folder))] = reason
    return files, skipped


def list_images(folder: PathLike, recursive: bool = False) -> List[Path]:
    """Sorted image files directly inside ``folder`` (or anywhere below it with ``recursive``)."""
    return scan_images(folder, recursive)[0]


def prepare_image(arr: np.ndarray, size: Optional[int]) -> np.ndarray:
    """Resize the shorter side to ``size`` (bicubic) and centre-crop ``size x size``; None: as is."""
    if not size:
        return arr
    h, w = arr.shape[:2]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    if (nh, nw) != (h, w):
        arr = np.asarray(Image.fromarray(arr).resize((nw, nh), Image.BICUBIC))
    top, left = (nh - size) // 2, (nw - size) // 2
    return arr[top:top + size, left:left + size]


def iter_images(folder: Path, size: Optional[int] = None,
                max_images: Optional[int] = None) -> Iterator[Tuple[str, np.ndarray]]:
    """``(name, H x W x 3 uint8)`` for the images directly inside ``folder`` (sorted)."""
    files = list_images(folder)
    if not files:
        raise FileNotFoundError(f"no images in {folder}")
    for path in files[:max_images]:
        yield path.stem, prepare_image(load_rgb(path), size)
