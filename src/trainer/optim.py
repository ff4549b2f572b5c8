"""Optimizers and learning-rate schedules from config sections.

``{"type": "Adam", "lr": 1e-4, ...}`` names any ``torch.optim`` class. Schedules are one
``LambdaLR`` whose factor is a linear warm-up times a step decay, so they are simple to
resume (``state_dict`` holds the step) and to reason about::

    warm(it)   = warmup_factor + (1 - warmup_factor) * min(1, it / warmup_iters)   (1 without warm-up)
    factor(it) = warm(it) * gamma ** (number of milestones <= it)

Section types: ``MultiStepLR`` (milestones, gamma, optional warmup_iters / warmup_factor),
``LinearWarmupScheduler`` (warm-up only) and ``Constant``.
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

    def __init__(self, warmup_iters: int = 0, warmup_factor: float = 0.0, milestones: Sequence[int] = (),
                 gamma: float = 0.1):
        self.warmup_iters = int(warmup_iters or 0)
        self.warmup_factor = float(warmup_factor)
        self.milestones = sorted(int(m) for m in milestones or ())
        self.gamma = float(gamma)

    def __call__(self, it: int) -> float:
        warm = 1.0
        if self.warmup_iters > 0 and it < self.warmup_iters:
            warm = self.warmup_factor + (1.0 - self.warmup_factor) * it / self.warmup_iters
        return warm * self.gamma ** bisect.bisect_right(self.milestones, it)


SCHEDULERS = ("MultiStepLR", "LinearWarmupScheduler", "Constant")


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: Optional[dict]):
    cfg = dict(cfg or {})
    name = cfg.pop("type", "Constant")
    if name not in SCHEDULERS:
        raise KeyError(f"unknown scheduler type {name!r}; known: {', '.join(SCHEDULERS)}")
    unknown = set(cfg) - {"milestones", "gamma", "warmup_iters", "warmup_factor"}
    if unknown:
        raise KeyError(f"scheduler {name}: unknown keys {sorted(unknown)}")
    milestones = cfg.get("milestones", ()) if name == "MultiStepLR" else ()
    factor = WarmupMultiStep(cfg.get("warmup_iters", 0), cfg.get("warmup_factor", 0.0), milestones,
                             cfg.get("gamma", 0.1))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set a new base lr (``load_checkpoint.new_g_lr``) on an optimizer and its scheduler's base."""
    for group in optimizer.param_groups:
        group["lr"] = lr
        group["initial_lr"] = lr
