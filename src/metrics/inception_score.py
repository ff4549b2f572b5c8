"""Inception Score (Salimans et al., 2016) of generated or reconstructed images.

    IS = exp( E_x KL( p(y|x) || p(y) ) ),   p(y|x) = softmax(f(x) W^T),   p(y) = mean_x p(y|x)

over ``splits`` equal parts of the set (mean and standard deviation over the parts, 10 by
convention). ``f(x)`` are the 2048-d pool3 features of the TF FID Inception network that
:class:`~src.metrics.fid.InceptionFeatures` already computes for FID, and ``W`` its 1008-class
output layer without the bias, as the original TF code (``softmax/logits/MatMul``) and
torch-fidelity's ``logits_unbiased`` use. So one forward pass serves rFID and IS, and both read the
same weight file (pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth``); a missing file raises
:class:`~src.metrics.weights.MetricUnavailable` naming it and the folder it belongs in.
"""
from __future__ import annotations

import numpy as np
import torch

from src.metrics.weights import FID_INCEPTION, MetricUnavailable, missing_weights_message


def inception_score_from_logits(logits: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """(mean, std) of the Inception Score over ``splits`` parts of an (N, C) logit matrix."""
    x = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    if x.ndim != 2 or x.shape[0] < splits or splits < 1:
        raise ValueError(f"need an (N >= splits={splits}, C) logit matrix, got {tuple(x.shape)}")
    log_p = torch.log_softmax(x, dim=1)
    scores = []
    for part in torch.tensor_split(log_p, splits):
        log_marginal = torch.logsumexp(part, dim=0) - np.log(part.shape[0])
        kl = (part.exp() * (part - log_marginal)).sum(1).mean()
        scores.append(kl.exp().item())
    return float(np.mean(scores)), float(np.std(scores))


def inception_class_weight() -> torch.Tensor:
    """The (1008, 2048) output layer of the FID Inception network, read from its weight file."""
    path = FID_INCEPTION.path()
    if not path.is_file():
        raise MetricUnavailable(missing_weights_message("is"))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if "fc.weight" not in state:
        raise MetricUnavailable(f"{path} has no 'fc.weight': not the FID Inception weights\n"
                                + missing_weights_message("is"))
    return state["fc.weight"].to(torch.float64)


def inception_score(features: np.ndarray, weight: torch.Tensor | None = None, splits: int = 10) -> tuple[float, float]:
    """Inception Score of (N, 2048) pool3 features (:class:`~src.metrics.fid.InceptionFeatures`)."""
    weight = inception_class_weight() if weight is None else weight
    logits = torch.as_tensor(np.asarray(features), dtype=torch.float64) @ weight.T
    return inception_score_from_logits(logits.numpy(), splits)
