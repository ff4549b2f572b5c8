"""Evaluate a folder of reconstructions against a folder of originals (logic of calc_metrics).

Files are paired by stem (``kodim01.png`` <-> ``kodim01.png`` / ``kodim01.webp``). Per-image
metrics (PSNR, MS-SSIM, LPIPS, DISTS) are averaged over images; FID/KID are computed on
256x256 patches of all images. A metric whose weights are missing is skipped and the reason is
recorded; the others are still computed.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pandas as pd
from tqdm import tqdm

from src.metrics.fid import InceptionFeatures, PatchFeatureBank, fid_from_features, kid_from_features
from src.metrics.perceptual import DISTSMetric, LPIPSMetric
from src.metrics.pixel import ms_ssim, psnr
from src.metrics.weights import MetricUnavailable
from src.utils.image_io import image_size, is_image_file, load_rgb

ALL_METRICS = ("psnr", "ms_ssim", "lpips", "dists", "fid", "kid")
PER_IMAGE = ("psnr", "ms_ssim", "lpips", "dists")


def parse_metrics(spec: str | Iterable[str]) -> list[str]:
    """``"psnr,lpips"`` (or a list; ``"all"``) -> validated names in canonical order."""
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    names = [n.strip().lower().replace("-", "_") for n in names if n.strip()]
    if names == ["all"]:
        return list(ALL_METRICS)
    unknown = sorted(set(names) - set(ALL_METRICS))
    if unknown or not names:
        raise ValueError(f"unknown metric(s) {unknown or names}; valid: {', '.join(ALL_METRICS)}")
    return [m for m in ALL_METRICS if m in names]


def list_images(folder: Path) -> dict[str, Path]:
    """Map stem -> image path; two files with one stem is an error."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"not a folder: {folder}")
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if is_image_file(p) and not p.name.startswith("_"):
            if p.stem in out:
                raise ValueError(f"two images named '{p.stem}' in {folder}: {out[p.stem].name}, {p.name}")
            out[p.stem] = p
    return out


def pair_images(real_dir: Path, fake_dir: Path) -> list[tuple[Path, Path]]:
    """(real, fake) pairs by stem; a missing reconstruction or a size mismatch is an error.

    Reconstructions without an original are ignored.
    """
    real, fake = list_images(real_dir), list_images(fake_dir)
    if not real:
        raise FileNotFoundError(f"no images in {real_dir}")
    missing = [real[s].name for s in real if s not in fake]
    if missing:
        raise FileNotFoundError(f"no reconstruction in {fake_dir} for: {', '.join(missing)}")
    pairs = [(real[s], fake[s]) for s in real]
    for r, f in pairs:  # fail before any metric is computed; reads headers only
        a, b = image_size(r), image_size(f)
        if a != b:
            raise ValueError(f"size mismatch for '{r.stem}': {r.name} is {a[0]}x{a[1]}, "
                             f"{f.name} is {b[0]}x{b[1]}")
    return pairs


@dataclass
class EvalResult:
    """Per-image table, dataset-level means and the metrics skipped (name -> reason)."""

    per_image: pd.DataFrame
    summary: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    num_patches: int | None = None  # FID/KID patches; None when FID/KID were not computed


def build_scorers(metrics: list[str], device: str) -> tuple[dict[str, Callable], dict[str, str]]:
    """Instantiate the learned metrics; those that cannot load go to ``skipped``."""
    factories = {"psnr": lambda: psnr, "ms_ssim": lambda: ms_ssim,
                 "lpips": lambda: LPIPSMetric(device), "dists": lambda: DISTSMetric(device)}
    if "fid" in metrics or "kid" in metrics:
        factories["inception"] = lambda: InceptionFeatures(device)
    scorers, skipped = {}, {}
    for name, make in factories.items():
        if name != "inception" and name not in metrics:
            continue
        try:
            scorers[name] = make()
        except MetricUnavailable as err:
            for m in (("fid", "kid") if name == "inception" else (name,)):
                if m in metrics:
                    skipped[m] = str(err)
    return scorers, skipped


def _score_pair(scorers: dict, real: np.ndarray, fake: np.ndarray, row: dict) -> None:
    for name in PER_IMAGE:
        if name in scorers:
            if name == "ms_ssim" and min(real.shape[:2]) <= 160:
                row[name] = math.nan
                continue
            row[name] = float(scorers[name](real, fake)[0])


def evaluate_dirs(real_dir: Path, fake_dir: Path, metrics: str | Iterable[str] = ALL_METRICS,
                  device: str = "cpu", progress: bool = True, scorers=None) -> EvalResult:
    """Compute ``metrics`` for all pairs; ``scorers`` (name -> callable) may be injected (tests)."""
    metrics = parse_metrics(metrics)
    pairs = pair_images(Path(real_dir), Path(fake_dir))
    skipped: dict[str, str] = {}
    if scorers is None:
        scorers, skipped = build_scorers(metrics, device)
    bank = PatchFeatureBank(scorers["inception"]) if "inception" in scorers else None
    rows = []
    for real_p, fake_p in tqdm(pairs, desc="metrics", disable=not progress):
        real, fake = load_rgb(real_p), load_rgb(fake_p)
        row = {"name": real_p.stem, "width": real.shape[1], "height": real.shape[0]}
        _score_pair(scorers, real, fake, row)
        if bank is not None:
            row["patches"] = bank.add(real, fake)
        rows.append(row)
    result = EvalResult(pd.DataFrame(rows), skipped=skipped)
    for name in PER_IMAGE:
        if name in result.per_image:
            if result.per_image[name].isna().all():
                result.skipped[name] = "every image has a side <= 160 px (MS-SSIM needs more)"
            else:
                result.summary[name] = float(result.per_image[name].mean())
    if bank is not None:
        _patch_metrics(bank, metrics, result)
    return result


def _patch_metrics(bank: PatchFeatureBank, metrics: list[str], result: EvalResult) -> None:
    try:
        real, fake = bank.features()
    except ValueError as err:  # images smaller than one patch
        result.skipped.update({m: str(err) for m in ("fid", "kid") if m in metrics})
        return
    result.num_patches = len(real)
    if len(real) < 2:
        result.skipped.update({m: "fewer than 2 patches" for m in ("fid", "kid") if m in metrics})
        return
    if "fid" in metrics:
        result.summary["fid"] = fid_from_features(real, fake)
    if "kid" in metrics:
        result.summary["kid"], result.summary["kid_std"] = kid_from_features(real, fake)


def _json_safe(values: dict) -> tuple[dict, dict]:
    """Metric means with every non-finite value replaced by None, and those values as strings
    (``{"psnr": "inf"}``), so that the file is valid JSON for any reader."""
    safe, non_finite = {}, {}
    for key, value in values.items():
        if isinstance(value, float) and not math.isfinite(value):
            safe[key], non_finite[key] = None, str(value)
        else:
            safe[key] = value
    return safe, non_finite


def save_result(result: EvalResult, out_dir: Path, real_dir: Path, fake_dir: Path) -> tuple[Path, Path]:
    """Write ``_metrics.json`` (means, skipped metrics) and ``_metrics_per_image.csv``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, csv_path = out_dir / "_metrics.json", out_dir / "_metrics_per_image.csv"
    metrics, non_finite = _json_safe(result.summary)
    payload = {"real_dir": str(real_dir), "fake_dir": str(fake_dir),
               "num_images": len(result.per_image), "num_patches": result.num_patches,
               "metrics": metrics, "skipped": result.skipped}
    if non_finite:  # e.g. PSNR of identical images; JSON has no Infinity
        payload["non_finite"] = non_finite
    json_path.write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n")
    result.per_image.to_csv(csv_path, index=False)
    return json_path, csv_path


def format_summary(result: EvalResult) -> str:
    """Human-readable lines: one per computed metric, then the skipped ones."""
    patches = "no" if result.num_patches is None else result.num_patches
    lines = [f"{len(result.per_image)} images, {patches} FID/KID patches"]
    lines += [f"  {k:8s} {v:.5f}" for k, v in result.summary.items()]
    lines += [f"  {k:8s} SKIPPED: {v}" for k, v in result.skipped.items()]
    return "\n".join(lines)
