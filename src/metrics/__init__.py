"""Evaluation metrics: pixel (PSNR, MS-SSIM), learned (LPIPS, DISTS), patch FID/KID, BD-rate, RD plots.

Learned metrics raise :class:`MetricUnavailable` (naming the weight file and folder) when their
ImageNet weights cannot be loaded; :func:`evaluate_dirs` then skips them and computes the rest.
"""
from src.metrics.bd import bd_psnr, bd_quality, bd_rate, higher_is_better
from src.metrics.fid import (InceptionFeatures, PatchFeatureBank, extract_patches, fid_from_features,
                             frechet_distance, gaussian_stats, kid_from_features, patch_positions)
from src.metrics.perceptual import DISTSMetric, LPIPSMetric
from src.metrics.pixel import ms_ssim, mse, psnr, ssim, to_uint8_grid
from src.metrics.weights import MetricUnavailable, OptionalMetric, missing_weights_message

__all__ = [
    "bd_psnr", "bd_quality", "bd_rate", "higher_is_better",
    "InceptionFeatures", "PatchFeatureBank", "extract_patches", "fid_from_features",
    "frechet_distance", "gaussian_stats", "kid_from_features", "patch_positions",
    "DISTSMetric", "LPIPSMetric", "ms_ssim", "mse", "psnr", "ssim", "to_uint8_grid",
    "MetricUnavailable", "OptionalMetric", "missing_weights_message",
]
