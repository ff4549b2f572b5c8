"""A handful of name -> class registries, filled by explicit imports.

A config section such as ``{"type": "MeanScaleDemo", "N": 32}`` is turned into an
object by ``MODELS.build(section)``: ``type`` picks the class and every other key
becomes a keyword argument. Registries are filled when the module defining a class
is imported; :mod:`src.models`, :mod:`src.trainer`, :mod:`src.losses` and
:mod:`src.data` import all their members explicitly, so importing the package is
enough (no filename scanning). The tokenizer zoo's models, token dataset and trainers
register when :func:`src.zoo.register` runs.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Optional


class Registry:
    def __init__(self, name: str):
        self.name = name
        self._items: Dict[str, Callable] = {}

    def register(self, name: Optional[str] = None) -> Callable:
        """Decorator: ``@MODELS.register()`` registers the class under its own name."""

        def deco(obj: Callable) -> Callable:
            key = name or obj.__name__
            if key in self._items and self._items[key] is not obj:
                raise KeyError(f"{self.name} registry: {key!r} is already registered "
                               f"(by {self._items[key].__module__})")
            self._items[key] = obj
            return obj

        return deco

    def get(self, name: str) -> Callable:
        if name not in self._items:
            known = ", ".join(sorted(self._items)) or "(none registered)"
            raise KeyError(f"unknown {self.name} type {name!r}; known {self.name}: {known}")
        return self._items[name]

    def build(self, cfg: Mapping[str, Any], **extra: Any) -> Any:
        """Build ``cfg['type']`` with the remaining keys (and ``extra``) as keyword arguments."""
        if not isinstance(cfg, Mapping) or "type" not in cfg:
            raise KeyError(f"{self.name} config needs a 'type' key, got {dict(cfg) if isinstance(cfg, Mapping) else cfg!r}")
        kwargs = {k: v for k, v in cfg.items() if k != "type"}
        kwargs.update(extra)
        cls = self.get(cfg["type"])
        try:
            return cls(**kwargs)
        except TypeError as e:
            raise TypeError(f"building {self.name} {cfg['type']!r}: {e}") from e

    def names(self):
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def __repr__(self) -> str:
        return f"Registry({self.name!r}, {self.names()})"


MODELS = Registry("model")
SUBNETS = Registry("subnet")
TRAINERS = Registry("trainer")
LOSSES = Registry("loss")
DATASETS = Registry("dataset")
