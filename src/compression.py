"""Compress a folder of images to framed files and decode them as a receiver would.

Used by ``scripts/compress.py``, ``scripts/decompress.py``, ``scripts/eval_kodak.py`` and the
quickstart. A bad input image is reported and skipped; the rest of the folder is still coded.
Entries that only look like images (a directory named ``x.png``, a dangling symlink, a symlink
loop) are no input at all: they are skipped with a log line and not counted as failures.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import pandas as pd
import torch
from tqdm import tqdm

from src.models.codec.bitstream import CorruptBitstreamError
from src.models.codec.image_coder import ImageCoder
from src.utils.checkpoint import atomic_write
from src.utils.image_io import ImageReadError, load_rgb, save_rgb, scan_images, to_tensor

log = logging.getLogger(__name__)

BITRATE_COLUMNS = ["img_name", "header_bit", "z_bit", "y_bit", "real_bit", "real_bpp", "pred_z_bit",
                   "pred_y_bit", "pred_bit", "pred_bpp", "num_pixel"]


@dataclass
class FolderReport:
    """``rows``: one per coded file; ``failed``: name -> error of the files that could not be coded;
    ``skipped``: name -> reason of the entries that are no files (see :func:`compress_folder`)."""

    rows: List[Dict]
    failed: Dict[str, str]
    skipped: Dict[str, str] = field(default_factory=dict)

    def averages(self) -> Dict[str, float]:
        """Means of the numeric columns the rows have (no pred_* columns with ``estimate=False``)."""
        if not self.rows:
            return {}
        df = pd.DataFrame(self.rows)
        return {k: float(df[k].mean()) for k in BITRATE_COLUMNS if k != "img_name" and k in df}


#: images above this many pixels are refused by default (96 MP took 600 s and 4.5 GB on a CPU)
DEFAULT_MAX_PIXELS = 40_000_000


def compress_folder(coder: ImageCoder, img_dir: os.PathLike, save_dir: os.PathLike, beta_rate: Optional[float],
                    beta_vq: Optional[float], decompress: bool = False, estimate: bool = True,
                    progress: bool = True, max_pixels: Optional[int] = DEFAULT_MAX_PIXELS) -> FolderReport:
    """Code every image of ``img_dir`` into ``save_dir/bin/<name>.bin`` (+ ``recon/<name>.png``).

    Writes ``_bitrates.csv`` (one row per image, :data:`BITRATE_COLUMNS`) and
    ``_avg_bitrate.json`` (means, the betas, the failures) in ``save_dir``. A file that cannot be
    read as an image is a failure (``report.failed``); an entry with an image name that is no
    file (directory, dangling symlink, symlink loop) is skipped with a log line
    (``report.skipped``), not counted as a failure. So is an image above ``max_pixels`` or with a
    side above the coder's ``max_side`` (refused from its header, before decoding its pixels).
    """
    save_dir = Path(save_dir)
    (save_dir / "bin").mkdir(parents=True, exist_ok=True)
    rows, failed, coded = [], {}, {}
    images, skipped = scan_images(img_dir)
    for name, reason in skipped.items():
        log.info("skipped %s: %s, not an image file", name, reason)
    for path in tqdm(images, desc="compress", disable=not progress, unit="img"):
        try:
            if path.stem in coded:   # img.png and img.jpg would both write img.bin
                raise ImageReadError(f"{path}: its output {path.stem}.bin is already written for "
                                     f"{coded[path.stem]}; rename one of them")
            x = to_tensor(load_rgb(path, max_pixels=max_pixels, max_side=coder.max_side)).unsqueeze(0)
        except ImageReadError as e:
            failed[path.name] = str(e)
            log.warning("skipped %s", e)
            continue
        coded[path.stem] = path.name
        enc = coder.encode(x, beta_rate, beta_vq, estimate=estimate)
        atomic_write(save_dir / "bin" / f"{path.stem}.bin", lambda tmp: Path(tmp).write_bytes(enc.data))
        row = {"img_name": path.stem, "header_bit": enc.header_bit, "z_bit": enc.z_bit, "y_bit": enc.y_bit,
               "real_bit": 8 * len(enc.data), "real_bpp": enc.real_bpp, "num_pixel": enc.num_pixels}
        if estimate:   # the model's estimate for the latents just coded (same pass)
            row.update(enc.predicted, pred_bpp=enc.predicted["pred_bit"] / enc.num_pixels)
        rows.append(row)
        if decompress:
            x_hat, _ = coder.decode(enc.data)
            save_rgb(x_hat[0], save_dir / "recon" / f"{path.stem}.png")
    report = FolderReport(rows, failed, skipped)
    pd.DataFrame(rows, columns=BITRATE_COLUMNS).to_csv(save_dir / "_bitrates.csv", index=False)
    summary = {**report.averages(), "beta_rate": beta_rate, "beta_vq": beta_vq, "num_images": len(rows),
               "failed": failed, "skipped": skipped}
    (save_dir / "_avg_bitrate.json").write_text(json.dumps(summary, indent=2))
    return report


def decompress_folder(coder: ImageCoder, bin_dir: os.PathLike, save_dir: os.PathLike,
                      progress: bool = True) -> FolderReport:
    """Decode every ``*.bin`` of ``bin_dir`` to ``save_dir/<name>.png``; corrupt files are reported and skipped."""
    save_dir = Path(save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    files = sorted(Path(bin_dir).glob("*.bin"))
    if not files:
        raise FileNotFoundError(f"no .bin files in {bin_dir}")
    rows, failed = [], {}
    for path in tqdm(files, desc="decompress", disable=not progress, unit="file"):
        try:
            x_hat, header = coder.decode(path.read_bytes())
        except CorruptBitstreamError as e:
            failed[path.name] = str(e)
            log.error("cannot decode %s: %s", path.name, e)
            continue
        save_rgb(x_hat[0], save_dir / f"{path.stem}.png")
        rows.append({"img_name": path.stem, "height": header.height, "width": header.width,
                     "beta_rate": header.beta_rate, "beta_vq": header.beta_vq})
    return FolderReport(rows, failed)


def report_json(report: FolderReport) -> str:
    return json.dumps(asdict(report), indent=2)


def device_or_cpu(device: str) -> str:
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"error: device {device!r} requested but CUDA is not available; use -d cpu")
    return device


#: column names of the published RD tables (data/rd_results/*.csv) for our metric keys
RD_COLUMNS = {"psnr": "PSNR", "ms_ssim": "MS-SSIM", "lpips": "LPIPS", "dists": "DISTS", "fid": "FID", "kid": "KID"}


def evaluate_rate_point(coder: ImageCoder, img_dir: os.PathLike, save_dir: os.PathLike, beta_rate, beta_vq,
                        metrics, device: str = "cpu", progress: bool = True) -> Dict:
    """compress -> decode as a receiver -> metrics, for one beta pair; returns one RD-table row."""
    from src.metrics.evaluate import evaluate_dirs

    save_dir = Path(save_dir)
    report = compress_folder(coder, img_dir, save_dir, beta_rate, beta_vq, estimate=True, progress=progress)
    if report.failed:
        raise ImageReadError(f"{len(report.failed)} image(s) of {img_dir} could not be read: "
                             + "; ".join(report.failed.values()))
    decoded = decompress_folder(coder, save_dir / "bin", save_dir / "decoded", progress=progress)
    if decoded.failed:
        raise CorruptBitstreamError(f"freshly written streams failed to decode: {decoded.failed}")
    result = evaluate_dirs(Path(img_dir), save_dir / "decoded", metrics, device=device, progress=progress)
    avg = report.averages()
    row = {"bpp": avg["real_bpp"], "pred_bpp": avg["pred_bpp"], "beta_rate": beta_rate, "beta_vq": beta_vq}
    row.update({RD_COLUMNS.get(k, k): v for k, v in result.summary.items()})
    row["skipped_metrics"] = "; ".join(f"{k}: {v.splitlines()[0]}" for k, v in result.skipped.items())
    return row
