"""Optimizers and learning-rate schedules from config sections.

``{"type": "Adam", "lr": 1e-4, ...}`` names any ``torch.optim`` class. Schedules are one
``LambdaLR`` whose factor is a linear warm-up times a step decay, so they are simple to
resume (``state_dict`` holds the step) and to reason about::

    factor(it) = min(1, (it + 1) / warmup_iter) * gamma ** (number of milestones <= it)
"""
from __future__ import annotations

import bisect
from typing import Iterable, Optional, Sequence

import torch


def build_optimizer(params: Iterable[torch.nn.Parameter], cfg: dict) -> torch.optim.Optimizer:
    cfg = dict(cfg)
    name = cfg.pop("type", "Adam")
    cls = getattr(torch.optim, name, None)
    if cls is None or not isinstance(cls, type) or not issubclass(cls, torch.optim.Optimizer):
        raise KeyError(f"unknown optimizer type {name!r}; use a torch.optim class name such as Adam or AdamW")
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError(f"{name}: no trainable parameters")
    return cls(params, **cfg)


class WarmupMultiStep:
    """Picklable factor function for ``LambdaLR`` (linear warm-up, then step decay)."""

    def __init__(self, warmup_iter: int = 0, milestones: Sequence[int] = (), gamma: float = 0.1):
        self.warmup_iter = int(warmup_iter or 0)
        self.milestones = sorted(int(m) for m in milestones or ())
        self.gamma = float(gamma)

    def __call__(self, it: int) -> float:
        warm = min(1.0, (it + 1) / self.warmup_iter) if self.warmup_iter > 0 else 1.0
        return warm * self.gamma ** bisect.bisect_right(self.milestones, it)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: Optional[dict], warmup_iter: int = 0):
    cfg = dict(cfg or {})
    name = cfg.pop("type", "MultiStepLR")
    if name not in ("MultiStepLR", "Constant"):
        raise KeyError(f"unknown scheduler type {name!r}; known: MultiStepLR, Constant")
    factor = WarmupMultiStep(warmup_iter, cfg.get("milestones", ()), cfg.get("gamma", 0.1))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set a new base lr (``load_checkpoint.new_g_lr``) on an optimizer and its scheduler's base."""
    for group in optimizer.param_groups:
        group["lr"] = lr
        group["initial_lr"] = lr
