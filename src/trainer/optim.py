"""Optimizers and learning-rate schedules from config sections.

``{"type": "Adam", "lr": 1e-4, ...}`` names any ``torch.optim`` class. Schedules are one
``LambdaLR`` whose factor is a linear warm-up times a step decay, so they are simple to
resume (``state_dict`` holds the step) and to reason about::

    warm(it)   = warmup_factor + (1 - warmup_factor) * min(1, it / warmup_iters)   (1 without warm-up)
    factor(it) = warm(it) * gamma ** (number of milestones <= it)

or, for ``CosineLR``, the same linear warm-up followed by a cosine decay to ``min_factor``::

    t          = min(1, (it - warmup_iters) / (total_iters - warmup_iters))        (it >= warmup_iters)
    factor(it) = min_factor + (1 - min_factor) * (1 + cos(pi * t)) / 2

Section types: ``MultiStepLR`` (milestones, gamma, optional warmup_iters / warmup_factor),
``CosineLR`` (total_iters, optional min_factor, warmup_iters, warmup_factor; the LlamaGen / BEiT v2
recipes), ``LinearWarmupScheduler`` (warm-up only) and ``Constant``. ``it`` counts the scheduler's
own steps: one per iteration, or for a discriminator one per iteration from ``disc_start`` on.
"""
from __future__ import annotations

import bisect
import math
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


class WarmupCosine:
    """Picklable factor function for ``LambdaLR`` (linear warm-up, then cosine decay to ``min_factor``)."""

    def __init__(self, total_iters: int, warmup_iters: int = 0, warmup_factor: float = 0.0, min_factor: float = 0.0):
        self.total_iters = int(total_iters)
        self.warmup_iters = int(warmup_iters or 0)
        if self.total_iters <= self.warmup_iters:
            raise ValueError(f"CosineLR: total_iters ({self.total_iters}) must exceed warmup_iters "
                             f"({self.warmup_iters})")
        if not 0.0 <= float(min_factor) <= 1.0:
            raise ValueError(f"CosineLR: min_factor must be in [0, 1], got {min_factor}")
        self.warmup_factor = float(warmup_factor)
        self.min_factor = float(min_factor)

    def __call__(self, it: int) -> float:
        if it < self.warmup_iters:
            return self.warmup_factor + (1.0 - self.warmup_factor) * it / self.warmup_iters
        t = min(1.0, (it - self.warmup_iters) / (self.total_iters - self.warmup_iters))
        return self.min_factor + (1.0 - self.min_factor) * 0.5 * (1.0 + math.cos(math.pi * t))


SCHEDULERS = ("MultiStepLR", "CosineLR", "LinearWarmupScheduler", "Constant")
KEYS = {"CosineLR": {"total_iters", "min_factor", "warmup_iters", "warmup_factor"}}


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: Optional[dict]):
    cfg = dict(cfg or {})
    name = cfg.pop("type", "Constant")
    if name not in SCHEDULERS:
        raise KeyError(f"unknown scheduler type {name!r}; known: {', '.join(SCHEDULERS)}")
    unknown = set(cfg) - KEYS.get(name, {"milestones", "gamma", "warmup_iters", "warmup_factor"})
    if unknown:
        raise KeyError(f"scheduler {name}: unknown keys {sorted(unknown)}")
    if name == "CosineLR":
        if "total_iters" not in cfg:
            raise KeyError("scheduler CosineLR needs total_iters (the iteration at which the decay ends)")
        return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(**cfg))
    milestones = cfg.get("milestones", ()) if name == "MultiStepLR" else ()
    factor = WarmupMultiStep(cfg.get("warmup_iters", 0), cfg.get("warmup_factor", 0.0), milestones,
                             cfg.get("gamma", 0.1))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set a new base lr (``load_checkpoint.new_g_lr``) on an optimizer and its scheduler's base."""
    for group in optimizer.param_groups:
        group["lr"] = lr
        group["initial_lr"] = lr
