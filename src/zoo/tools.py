"""What the tokenizer scripts do: load a trained tokenizer, reconstruct, tokenize, evaluate,
and show which image patches map to a code.

Used by ``scripts/eval_tokenizer.py``, ``scripts/tokenize.py``, ``scripts/visualize_patches.py``,
``scripts/sample_ar.py`` and the zoo trainers; their parsers' options are in the torch-free
:mod:`src.zoo.args`.

Images are read as RGB, optionally resized (shorter side) and centre-cropped to ``size``
(:func:`prepare_image`, the usual ImageNet rFID protocol), padded at the bottom/right by
reflection to a multiple of the downsampling factor ``f`` and encoded; reconstructions are
cropped back. An image of H x W gives ``ceil(H / f) x ceil(W / f)`` tokens.
"""
from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image, ImageDraw

from src.metrics.pixel import ms_ssim, psnr, ssim, to_uint8_grid
from src.metrics.weights import OptionalMetric
from src.models.vq.vqgan import reconstruct
from src.utils.image_io import iter_images, list_images, load_rgb, prepare_image, to_tensor  # noqa: F401
from src.utils.padding import pad_to_multiple

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------- basics
def index_dtype(codebook_size: int) -> np.dtype:
    """Smallest signed-safe dtype for indices: uint8 up to 256 codes, int16 up to 2^15, else int32."""
    if codebook_size <= 256:
        return np.dtype(np.uint8)
    if codebook_size <= 2 ** 15:
        return np.dtype(np.int16)
    return np.dtype(np.int32)


# --------------------------------------------------------------------------------- loading
def _read_checkpoint(path: Path) -> Any:
    from src.models.vq.vqgan import load_checkpoint_file
    from src.utils.checkpoint import load_file

    try:
        return load_file(path)  # our training checkpoints
    except RuntimeError:
        return load_checkpoint_file(str(path))  # official Lightning files (lenient unpickling)


def load_tokenizer(ckpt_path: str, config: Optional[str] = None, use_ema: bool = False,
                   device: str = "cpu"):
    """A trained tokenizer in eval mode.

    ``ckpt_path``: a checkpoint written by ``scripts/train.py`` (``comp_model``, its config
    inside; ``use_ema`` picks ``ema_model``), or an official taming / latent-diffusion file,
    which needs ``config``: a YAML whose ``model`` section describes it.
    """
    import src.models  # noqa: F401  (fills MODELS: VQGAN)
    import src.zoo.tokenizers  # noqa: F401  (and the zoo's tokenizers)
    from src.models.vq.vqgan import vq_state_dict
    from src.utils.checkpoint import load_model_state
    from src.utils.config import load_config
    from src.utils.registry import MODELS

    ckpt = _read_checkpoint(Path(ckpt_path))
    model_cfg = load_config(config).model.to_dict() if config else None
    if isinstance(ckpt, dict) and "comp_model" in ckpt:
        key = "ema_model" if use_ema else "comp_model"
        if key not in ckpt:
            raise KeyError(f"{ckpt_path}: no EMA weights (the run had no trainer.ema_decay); drop --ema")
        state = ckpt[key]
        model_cfg = model_cfg or ckpt.get("config", {}).get("model")
    else:
        if use_ema:
            raise KeyError(f"{ckpt_path} is not one of our training checkpoints; it has no EMA weights")
        state = vq_state_dict(ckpt)
    if not model_cfg:
        raise ValueError(f"{ckpt_path} holds no config: pass --config with a 'model' section")
    from src.zoo.tokenizers.teachers import require_teachers

    require_teachers(model_cfg, train=False)   # a Cluster tokenizer encodes with its teacher
    model = MODELS.build(model_cfg)
    load_model_state(model, state, strict=True, source=str(ckpt_path))
    return model.to(device).eval()


# ------------------------------------------------------------------------------ tokenizing
def tokenize_folder(model, images: Path, out_dir: Path, size: Optional[int] = None,
                    max_images: Optional[int] = None, device: str = "cpu") -> Dict[str, Any]:
    """Write ``<name>.npy`` (token grid, :func:`index_dtype`) per image and ``index.json``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    k, f = model.quantize.codebook_size, model.downsample_factor
    dtype = index_dtype(k)
    entries = {}
    for name, arr in iter_images(images, size, max_images):
        x = to_tensor(arr).unsqueeze(0).to(device)
        with torch.no_grad():
            xp, _ = pad_to_multiple(x, f)
            _, indices = model.encode(xp)
        np.save(out_dir / f"{name}.npy", indices[0].cpu().numpy().astype(dtype))
        entries[name] = {"file": f"{name}.npy", "height": arr.shape[0], "width": arr.shape[1],
                         "tokens": list(indices.shape[1:])}
    index = {"codebook_size": k, "factor": f, "size": size, "dtype": dtype.name, "images": entries}
    (out_dir / "index.json").write_text(json.dumps(index, indent=2))
    log.info("wrote %d token files (%s) to %s", len(entries), dtype.name, out_dir)
    return index


# ------------------------------------------------------------------- tokenizing at scale
AUGMENTATIONS = ("none", "flip", "ten_crop")


def list_dataset_images(root: Path) -> List[Tuple[str, Path]]:
    """``(key, path)`` of every image: ``class/stem`` for an ImageNet layout (images in class
    sub-folders; classes are the sorted sub-folder names), else ``stem`` for a flat folder."""
    class_dirs = sorted(d for d in Path(root).iterdir() if d.is_dir() and list_images(d))
    if class_dirs:
        return [(f"{d.name}/{p.stem}", p) for d in class_dirs for p in list_images(d)]
    files = list_images(root)
    if not files:
        raise FileNotFoundError(f"no images in {root} or in its sub-folders")
    return [(p.stem, p) for p in files]


def augmented_views(arr: np.ndarray, size: int, aug: str = "none", crop_range: float = 1.1) -> np.ndarray:
    """The views of an image that get tokenized, (n, size, size, 3) uint8, as LlamaGen's
    ``extract_codes_c2i.py`` makes them: ``none`` - the centre crop (1 view); ``flip`` - it and its
    mirror image (2); ``ten_crop`` - the image resized and centre-cropped to ``crop_range * size``,
    its four corner and centre crops of ``size``, then those five of its mirror image (10)."""
    if aug not in AUGMENTATIONS:
        raise ValueError(f"augmentation must be one of {AUGMENTATIONS}, got {aug!r}")
    if aug != "ten_crop":
        crop = prepare_image(arr, size)
        return np.stack([crop, crop[:, ::-1]] if aug == "flip" else [crop])
    big = prepare_image(arr, int(round(size * crop_range)))
    s, n = size, big.shape[0]
    corners = [(0, 0), (0, n - s), (n - s, 0), (n - s, n - s), ((n - s) // 2, (n - s) // 2)]
    views = [im[t:t + s, l:l + s] for im in (big, big[:, ::-1]) for t, l in corners]
    return np.ascontiguousarray(np.stack(views))


def tokenize_dataset(model, images: Path, out_dir: Path, size: int, aug: str = "none", rank: int = 0,
                     world: int = 1, max_images: Optional[int] = None, device: str = "cpu",
                     crop_range: float = 1.1) -> Dict[str, Any]:
    """Tokenize this shard (every ``world``-th image from ``rank``) of a folder or an ImageNet class
    layout into ``out_dir/<key>.npy``: an (h, w) grid, or (views, h, w) with ``flip`` / ``ten_crop``
    (a 1D tokenizer: (n,) or (views, n)). Files already there are kept (a restart resumes); each is
    written under a temporary name and renamed. Writes ``out_dir/index.rank<rank>.json`` and returns
    it with ``new``, ``seconds`` and ``images_per_second`` of this call."""
    import os
    import time

    out_dir.mkdir(parents=True, exist_ok=True)
    k, f = model.quantize.codebook_size, model.downsample_factor
    dtype = index_dtype(k)
    items = list_dataset_images(images)[:max_images]
    classes = sorted({key.split("/")[0] for key, _ in items if "/" in key})
    entries, new, start = {}, 0, time.perf_counter()
    for key, path in items[rank::world]:
        target = out_dir / f"{key}.npy"
        if target.is_file():
            tokens = np.load(target, mmap_mode="r")
            with Image.open(path) as im:
                width, height = im.size
        else:
            arr = load_rgb(path)
            height, width = arr.shape[:2]
            views = augmented_views(arr, size, aug, crop_range)
            x = torch.stack([to_tensor(v) for v in views]).to(device)
            with torch.no_grad():
                _, indices = model.encode(pad_to_multiple(x, f)[0])
            tokens = indices.cpu().numpy().astype(dtype)
            tokens = tokens[0] if aug == "none" else tokens
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.stem}.rank{rank}.tmp.npy")
            np.save(tmp, tokens)
            os.replace(tmp, target)
            new += 1
        entries[key] = {"file": f"{key}.npy", "height": height, "width": width,
                        "label": classes.index(key.split("/")[0]) if classes else 0,
                        "tokens": list(tokens.shape[-1:] if getattr(model, "num_tokens", None) else tokens.shape[-2:]),
                        "views": 1 if aug == "none" else int(tokens.shape[0])}
    seconds = time.perf_counter() - start
    index = {"codebook_size": k, "factor": f, "size": size, "dtype": dtype.name, "augmentation": aug,
             "classes": classes, "images": entries}
    (out_dir / f"index.rank{rank}.json").write_text(json.dumps(index))
    log.info("rank %d: %d images (%d new) in %.1f s, %.2f new images/s", rank, len(entries), new, seconds,
             new / max(seconds, 1e-9))
    return {**index, "new": new, "seconds": seconds, "images_per_second": new / max(seconds, 1e-9)}


def merge_token_indices(out_dir: Path, world: int) -> Optional[Path]:
    """Merge ``index.rank0..world-1.json`` into ``index.json`` (and remove them) once all are there;
    None while some shard has not finished."""
    parts = [out_dir / f"index.rank{r}.json" for r in range(world)]
    try:
        shards = [json.loads(p.read_text()) for p in parts]
    except FileNotFoundError:   # a shard still running (or another process merged first)
        return None
    merged = {k: v for k, v in shards[0].items() if k != "images"}
    merged["images"] = dict(sorted((key, e) for s in shards for key, e in s["images"].items()))
    path = out_dir / "index.json"
    path.write_text(json.dumps(merged, indent=1))
    for p in parts:
        p.unlink(missing_ok=True)
    return path


# ----------------------------------------------------------------------------- evaluation
def write_npz(path: Path, images: Sequence[np.ndarray]) -> Path:
    """Images (H x W x 3 uint8, one size) as one (N, H, W, 3) uint8 array under ``arr_0``: the layout
    the ADM evaluator (guided-diffusion's ``evaluator.py``) and clean-fid read."""
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
        raise ValueError(f"an .npz batch needs images of one size, got {sorted(shapes)[:4]}; resize and crop "
                         f"them to one size (--size)")
    arr = np.stack(images)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"an .npz batch holds uint8 N x H x W x 3 images, got {arr.dtype} {arr.shape}")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, arr_0=arr)
    return path


def evaluate_tokenizer(model, images: Path, size: Optional[int] = None, max_images: Optional[int] = None,
                       device: str = "cpu", lpips: bool = True, rfid: bool = True, inception_score: bool = True,
                       save_to: Optional[Path] = None, networks: Optional[Dict[str, Any]] = None
                       ) -> Tuple[Dict[str, Any], List[Dict[str, Any]]]:
    """PSNR, SSIM, MS-SSIM (sides > 160 px), L1 and MSE (pixels in [0, 1]), LPIPS, rFID and the
    Inception Score of the reconstructions (when their weights load), and the codebook usage /
    perplexity / entropy over all tokens. Returns (summary, per-image rows).

    ``save_to``: write each reconstruction as ``save_to/reconstructions/<name>.png`` and, when all
    images have one size, ``save_to/reconstructions.npz`` and ``save_to/inputs.npz`` (uint8 NHWC
    under ``arr_0``, for the ADM evaluator or clean-fid). ``networks``: a dict that keeps the
    metric networks between calls (a sweep builds them once)."""
    from src.metrics import InceptionFeatures, LPIPSMetric, fid_from_features
    from src.metrics.inception_score import inception_class_weight
    from src.metrics.inception_score import inception_score as score_of
    from src.models.vq.quantizers import usage_from_counts
    from src.utils.image_io import save_rgb

    skipped: Dict[str, str] = {}
    lp = OptionalMetric("lpips", lpips, lambda: LPIPSMetric(device), skipped, networks).fn
    inception = OptionalMetric("rfid", rfid or inception_score, lambda: InceptionFeatures(device), skipped,
                                networks).fn
    is_weight = None
    if inception is None and inception_score:
        skipped["inception_score"] = skipped["rfid"]
    elif inception is not None:
        is_weight = OptionalMetric("inception_score", inception_score, inception_class_weight, skipped,
                                    networks).fn
    k = model.quantize.codebook_size
    counts = torch.zeros(k, dtype=torch.long)
    rows, real_feats, fake_feats, inputs, recons = [], [], [], [], []
    for name, arr in iter_images(images, size, max_images):
        x = to_tensor(arr).unsqueeze(0).to(device)
        x_hat, indices = reconstruct(model, x)
        ref, rec = (x + 1) / 2, (x_hat.clamp(-1, 1) + 1) / 2
        row = {"name": name, "height": arr.shape[0], "width": arr.shape[1],
               "psnr": psnr(ref, rec).item(), "ssim": ssim(ref, rec).item(),
               "l1": (rec - ref).abs().mean().item(), "mse": (rec - ref).square().mean().item()}
        if min(arr.shape[:2]) > 160:
            row["ms_ssim"] = ms_ssim(ref, rec).item()
        if lp is not None:
            row["lpips"] = lp(ref, rec).item()
        if inception is not None:
            if rfid:
                real_feats.append(inception(ref))
            fake_feats.append(inception(rec))
        if save_to is not None:
            rec_u8 = to_uint8_grid(rec)[0].permute(1, 2, 0).to(torch.uint8).cpu().numpy()  # as the metrics see it
            save_rgb(rec_u8, Path(save_to) / "reconstructions" / f"{name}.png")
            inputs.append(arr)
            recons.append(rec_u8)
        counts += torch.bincount(indices.reshape(-1).cpu(), minlength=k)
        rows.append(row)
    summary: Dict[str, Any] = {"num_images": len(rows)}
    for key in ("psnr", "ssim", "ms_ssim", "l1", "mse", "lpips"):
        values = [r[key] for r in rows if key in r]
        summary[key] = sum(values) / len(values) if values else None
    if inception is not None and rfid and len(rows) >= 2:
        summary["rfid"] = fid_from_features(np.concatenate(real_feats), np.concatenate(fake_feats))
    elif inception is not None and rfid:
        skipped["rfid"] = "needs at least 2 images"
    summary.setdefault("rfid", None)
    if is_weight is not None:
        splits = min(10, len(rows))
        summary["inception_score"], summary["inception_score_std"] = score_of(np.concatenate(fake_feats),
                                                                              is_weight, splits)
        summary["inception_score_splits"] = splits
    summary.setdefault("inception_score", None)
    if save_to is not None:
        try:
            write_npz(Path(save_to) / "reconstructions.npz", recons)
            write_npz(Path(save_to) / "inputs.npz", inputs)
        except ValueError as e:
            skipped["npz"] = str(e)
    stats = usage_from_counts(counts)
    summary.update(codebook_size=k, num_tokens=int(counts.sum()), used_codes=int((counts > 0).sum()),
                   usage=float(stats["usage"]), perplexity=float(stats["perplexity"]),
                   entropy=float(stats["entropy"]), entropy_bits=float(stats["entropy"]) / math.log(2),
                   skipped=skipped)
    return summary, rows


def write_results(summary: Dict[str, Any], rows: List[Dict[str, Any]], out_dir: Path,
                  extra: Optional[Dict[str, Any]] = None) -> Tuple[Path, Path]:
    """``metrics.json`` (summary + ``extra``) and ``per_image.csv`` under ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, csv_path = out_dir / "metrics.json", out_dir / "per_image.csv"
    json_path.write_text(json.dumps({**(extra or {}), **summary}, indent=2))
    fields = sorted({k for r in rows for k in r}, key=lambda k: (k != "name", k))
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return json_path, csv_path


# -------------------------------------------------------------------------- patch display
def load_tokens(tokens_dir: Path) -> Tuple[Dict[str, Any], Dict[str, np.ndarray]]:
    """``index.json`` and the token grids written by :func:`tokenize_folder`."""
    index_path = tokens_dir / "index.json"
    if not index_path.is_file():
        raise FileNotFoundError(f"{index_path} not found; write the tokens with scripts/tokenize.py")
    index = json.loads(index_path.read_text())
    grids = {name: np.load(tokens_dir / e["file"]) for name, e in index["images"].items()}
    flat = [name for name, g in grids.items() if g.ndim != 2]
    if flat:
        raise ValueError(f"{tokens_dir}: {flat[0]}.npy holds a token sequence of shape {grids[flat[0]].shape}, "
                         f"not a 2D grid; a 1D tokenizer's tokens have no patch positions to show")
    return index, grids


def pick_codes(grids: Dict[str, np.ndarray], codes: Optional[Sequence[int]], top: int) -> List[int]:
    """The given codes, or the ``top`` most frequent ones."""
    if codes:
        return [int(c) for c in codes]
    values, counts = np.unique(np.concatenate([g.reshape(-1) for g in grids.values()]), return_counts=True)
    return [int(v) for v in values[np.argsort(-counts, kind="stable")][:top]]


def code_patches(images: Path, index: Dict[str, Any], grids: Dict[str, np.ndarray], code: int,
                 max_patches: int, context: int = 0, seed: int = 0) -> List[np.ndarray]:
    """Up to ``max_patches`` image patches (``f + 2 * context`` px square) whose token is ``code``,
    drawn at random (``seed``) from all its occurrences, in image order."""
    f, size = int(index["factor"]), index.get("size")
    files = {p.stem: p for p in list_images(images)}
    hits = [(name, int(i), int(j)) for name, grid in grids.items() if name in files
            for i, j in np.argwhere(grid == code)]
    if len(hits) > max_patches:
        keep = np.sort(np.random.default_rng(seed).choice(len(hits), max_patches, replace=False))
        hits = [hits[k] for k in keep]
    cache: Dict[str, np.ndarray] = {}
    patches = []
    for name, i, j in hits:
        if name not in cache:
            img, _ = pad_to_multiple(to_tensor(prepare_image(load_rgb(files[name]), size)).unsqueeze(0), f)
            img = torch.nn.functional.pad(img, (context,) * 4, mode="replicate")
            cache[name] = ((img[0].permute(1, 2, 0).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
        patches.append(cache[name][i * f: (i + 1) * f + 2 * context, j * f: (j + 1) * f + 2 * context])
    return patches


def patch_grid(rows: List[Tuple[int, List[np.ndarray]]], cols: int, scale: int = 4,
               label_width: int = 56) -> Image.Image:
    """One row per code (label at the left), its patches enlarged ``scale`` times (nearest)."""
    side = max((p.shape[0] for _, ps in rows for p in ps), default=8) * scale
    gap = 2
    width = label_width + cols * (side + gap) + gap
    canvas = Image.new("RGB", (width, len(rows) * (side + gap) + gap), (40, 40, 40))
    draw = ImageDraw.Draw(canvas)
    for r, (code, patches) in enumerate(rows):
        y = gap + r * (side + gap)
        draw.text((4, y + side // 2 - 5), f"{code} ({len(patches)})", fill=(255, 255, 255))
        for c, patch in enumerate(patches[:cols]):
            tile = Image.fromarray(patch).resize((side, side), Image.NEAREST)
            canvas.paste(tile, (label_width + gap + c * (side + gap), y))
    return canvas
