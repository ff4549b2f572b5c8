"""Bjontegaard delta rate and quality between two rate-quality curves.

BD-rate: interpolate log10(rate) as a function of quality for both curves (pchip by default),
average the difference over the overlapping quality range and report it as a percentage
(negative = the test curve needs fewer bits). BD-quality (BD-PSNR): the same with quality as a
function of log10(rate). The integration is done by the ``bjontegaard`` package (FAU-LMS).

For metrics where lower is better (LPIPS, DISTS, FID, KID) the quality axis is negated first, so
that a negative BD-rate always means "better" and a positive BD-quality always means "better".
"""
from __future__ import annotations

import warnings
from typing import Sequence

import bjontegaard
import numpy as np

LOWER_IS_BETTER = frozenset({"lpips", "dists", "fid", "kid", "mse", "bpp"})


def higher_is_better(metric: str) -> bool:
    """Direction of a metric by (case-insensitive) name; unknown names count as higher-better."""
    return metric.strip().lower().replace("-", "_") not in LOWER_IS_BETTER


def _prepare(rate: Sequence[float], quality: Sequence[float], sign: float,
             sort_by: str) -> tuple[np.ndarray, np.ndarray]:
    r, q = np.asarray(rate, np.float64), sign * np.asarray(quality, np.float64)
    if r.shape != q.shape or r.ndim != 1 or len(r) < 2:
        raise ValueError("rate and quality must be 1-D sequences of equal length >= 2")
    if not (np.isfinite(r).all() and np.isfinite(q).all()):
        raise ValueError("rate and quality must be finite (drop the points with a missing value)")
    if (r <= 0).any():
        raise ValueError("rates must be positive")
    order = np.argsort(q if sort_by == "quality" else r)
    r, q = r[order], q[order]
    key = q if sort_by == "quality" else r
    if (np.diff(key) <= 0).any():
        raise ValueError(f"{sort_by} values must be distinct (the curve must be monotonic)")
    return r, q


def bd_rate(rate_anchor: Sequence[float], quality_anchor: Sequence[float],
            rate_test: Sequence[float], quality_test: Sequence[float],
            higher_better: bool = True, method: str = "pchip") -> float:
    """BD-rate of the test curve against the anchor, in percent.

    Args:
        higher_better: False for LPIPS, DISTS, FID, ... (see :func:`higher_is_better`).
        method: ``"pchip"``, ``"akima"`` or ``"cubic"`` (the classic VCEG-M33 cubic fit).
    Returns:
        ``nan`` when the quality ranges do not overlap.
    """
    sign = 1.0 if higher_better else -1.0
    ra, qa = _prepare(rate_anchor, quality_anchor, sign, "quality")
    rt, qt = _prepare(rate_test, quality_test, sign, "quality")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # overlap warnings: nan is returned instead
        return float(bjontegaard.bd_rate(ra, qa, rt, qt, method=method,
                                         require_matching_points=False, min_overlap=0))


def bd_quality(rate_anchor: Sequence[float], quality_anchor: Sequence[float],
               rate_test: Sequence[float], quality_test: Sequence[float],
               higher_better: bool = True, method: str = "pchip") -> float:
    """BD-quality (BD-PSNR for PSNR): average quality gain of test over anchor at equal rate.

    For lower-is-better metrics the result is anchor minus test, so positive still means better.
    """
    sign = 1.0 if higher_better else -1.0
    ra, qa = _prepare(rate_anchor, quality_anchor, sign, "rate")
    rt, qt = _prepare(rate_test, quality_test, sign, "rate")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return float(bjontegaard.bd_psnr(ra, qa, rt, qt, method=method,
                                         require_matching_points=False, min_overlap=0))


def bd_psnr(rate_anchor, psnr_anchor, rate_test, psnr_test, method: str = "pchip") -> float:
    """BD-PSNR in dB (:func:`bd_quality` for PSNR)."""
    return bd_quality(rate_anchor, psnr_anchor, rate_test, psnr_test, True, method)
