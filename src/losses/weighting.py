"""Shared reduction rule, per-sample beta weights and the adaptive GAN weight.

Reduction rule used by every loss in this package: a loss is first computed
per sample (mean over all non-batch positions, giving shape (N,)), optionally
multiplied by a per-sample weight, and then reduced over the batch:

* ``"none"``: the (N,) vector,
* ``"mean"``: its mean,
* ``"sum"``:  its sum.

``loss_weight`` multiplies the result in every case.
"""
from __future__ import annotations

import math
from typing import Optional, Union

import torch

REDUCTIONS = ("none", "mean", "sum")
Number = Union[float, int]


def check_reduction(reduction: str) -> str:
    """Return ``reduction`` if valid, else raise a ValueError listing the choices."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return reduction


def per_sample(loss: torch.Tensor) -> torch.Tensor:
    """Mean over every dim but the first: (N, ...) -> (N,). A 0-d tensor becomes (1,)."""
    if loss.ndim == 0:
        return loss.reshape(1)
    if loss.ndim == 1:
        return loss
    return loss.flatten(1).mean(dim=1)


def reduce_batch(loss: torch.Tensor, reduction: str,
                 sample_weight: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Apply the package's reduction rule to an (N, ...) loss (see module docstring)."""
    loss = per_sample(loss)
    if sample_weight is not None:
        sample_weight = torch.as_tensor(sample_weight, dtype=loss.dtype, device=loss.device)
        if sample_weight.ndim > 1 or sample_weight.numel() not in (1, loss.numel()):
            raise ValueError(f"sample_weight of shape {tuple(sample_weight.shape)} "
                             f"does not match a batch of {loss.numel()}")
        loss = loss * sample_weight
    if reduction == "none":
        return loss
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def beta_weight(beta: Union[torch.Tensor, Number], scale: Number = 1.0, policy: str = "exp",
                offset: Number = 1.0) -> Union[torch.Tensor, float]:
    """Per-sample loss weight from a conditioning beta (DC-VIC step 1-2).

    ``policy="exp"``: ``scale * exp(beta)`` (the paper: ``0.5 * e^beta_rate`` on
    the rate, ``0.006 * e^beta_vq`` / ``0.003 * e^beta_vq`` on the VQ terms).
    ``policy="linear"``: ``scale * (beta + offset)``.
    Tensors give tensors; Python numbers give a float.
    """
    if policy == "exp":
        return scale * (torch.exp(beta) if torch.is_tensor(beta) else math.exp(beta))
    if policy == "linear":
        return scale * (beta + offset)
    raise ValueError(f"policy must be 'exp' or 'linear', got {policy!r}")


def adaptive_gan_weight(nll_loss: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor,
                        gain: float = 1.0, max_weight: float = 1e4,
                        eps: float = 1e-4) -> torch.Tensor:
    """Balance the adversarial term against the reconstruction term (Esser et al. 2021).

    ``w = gain * clamp(|d nll / d W| / (|d g / d W| + eps), 0, max_weight)`` where
    ``W`` is the weight of the decoder's last layer and ``|.|`` the L2 norm. The
    result is detached; both losses keep their graphs (``retain_graph=True``).
    """
    (g_nll,) = torch.autograd.grad(nll_loss, last_layer, retain_graph=True)
    (g_adv,) = torch.autograd.grad(g_loss, last_layer, retain_graph=True)
    ratio = torch.linalg.vector_norm(g_nll) / (torch.linalg.vector_norm(g_adv) + eps)
    return (ratio.clamp(0.0, max_weight) * gain).detach()
