"""YAML configs with ``_base_`` inheritance (mmengine-style, YAML only).

Rules
-----
* ``_base_`` is a path or a list of paths, relative to the file that names it.
  Bases are merged in order (later bases win), recursively, and the file's own
  keys are merged last (the child wins).
* Mappings merge key by key. A mapping carrying ``_delete_: true`` replaces the
  inherited mapping instead of merging into it. Lists and scalars replace.
* Replacing a mapping with a non-mapping (or the reverse) is an error unless
  ``_delete_: true`` says so; the message names the file and the key.
* ``overrides`` are ``a.b.c=value`` strings; the value is parsed as YAML. They may
  create a new key only where its parent mapping exists.

The result is a :class:`Config`: a ``dict`` whose nested mappings are also
``Config`` and whose keys can be read as attributes (``cfg.optim.g_optimizer.lr``).
"""
from __future__ import annotations

import copy
import difflib
import os
import re
from pathlib import Path
from typing import Any, Iterable, List, Mapping, Optional, Sequence, Union

import yaml

BASE_KEY = "_base_"
DELETE_KEY = "_delete_"


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-4`` (no dot) as a float, as YAML 1.2 does."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def _yaml_load(text_or_stream):
    return yaml.load(text_or_stream, Loader=_Loader)


class ConfigError(ValueError):
    """A config file or override that cannot be resolved."""


class Config(dict):
    """A dict with attribute access; nested dicts are converted on construction."""

    def __init__(self, data: Optional[dict] = None, **kwargs: Any):
        super().__init__()
        for k, v in dict(data or {}, **kwargs).items():
            self[k] = _wrap(v)

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"config has no key {name!r}; keys: {sorted(self)}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = _wrap(value)

    def __deepcopy__(self, memo):
        return Config(copy.deepcopy(dict(self), memo))

    def to_dict(self) -> dict:
        """Plain nested dicts and lists (for YAML dumps and checkpoints)."""
        return _unwrap(self)

    def get_path(self, dotted: str, default: Any = None) -> Any:
        return get_path(self, dotted, default)


def get_path(mapping: Any, dotted: str, default: Any = None) -> Any:
    """``get_path(d, "likelihoods.y")`` is ``d["likelihoods"]["y"]``, or ``default`` when a key on the way
    is absent or a value on the way is not a mapping (plain dicts and Config alike)."""
    node: Any = mapping
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


def _wrap(v: Any) -> Any:
    if isinstance(v, dict) and not isinstance(v, Config):
        return Config(v)
    if isinstance(v, list):
        return [_wrap(x) for x in v]
    return v


def _unwrap(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _unwrap(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_unwrap(x) for x in v]
    return v


def _read_yaml(path: Path) -> dict:
    try:
        with open(path, "r", encoding="utf-8") as f:
            data = _yaml_load(f)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def _merge(base: dict, child: dict, file: Path, prefix: str = "") -> dict:
    """Merge ``child`` into a copy of ``base`` following the rules in the module docstring."""
    out = dict(base)
    for key, value in child.items():
        if key == DELETE_KEY:
            continue
        where = f"{prefix}{key}"
        if isinstance(value, dict):
            replace = bool(value.get(DELETE_KEY, False))
            clean = {k: v for k, v in value.items() if k != DELETE_KEY}
            if key in out and not replace:
                if not isinstance(out[key], dict):
                    raise ConfigError(
                        f"{file}: key '{where}' is a mapping here but a {type(out[key]).__name__} "
                        f"in a base config; add '_delete_: true' to replace it")
                out[key] = _merge(out[key], clean, file, where + ".")
            else:
                out[key] = _merge({}, clean, file, where + ".")
                if replace:  # keep the marker so that a file including this one replaces too
                    out[key][DELETE_KEY] = True
        else:
            if key in out and isinstance(out[key], dict) and value is not None:
                raise ConfigError(
                    f"{file}: key '{where}' is a {type(value).__name__} here but a mapping in a base "
                    f"config; write it as a mapping with '_delete_: true' to replace it, or set it to null")
            out[key] = copy.deepcopy(value)
    return out


def _resolve(path: Path, stack: List[Path]) -> dict:
    path = path.resolve()
    if path in stack:
        chain = " -> ".join(str(p) for p in stack + [path])
        raise ConfigError(f"cycle of _base_ files: {chain}")
    if not path.is_file():
        parent = stack[-1] if stack else None
        named = f" (named in _base_ of {parent})" if parent else ""
        raise ConfigError(f"config file not found: {path}{named}")
    data = _read_yaml(path)
    bases = data.pop(BASE_KEY, None)
    if bases is None:
        bases = []
    elif isinstance(bases, (str, os.PathLike)):
        bases = [bases]
    elif not isinstance(bases, list):
        raise ConfigError(f"{path}: _base_ must be a path or a list of paths")
    merged: dict = {}
    for base in bases:
        base_path = (path.parent / str(base))
        merged = _merge(merged, _resolve(base_path, stack + [path]), base_path)
    return _merge(merged, data, path)


def strip_markers(data: Any) -> Any:
    """Drop the merge marker ``_delete_`` at every level (mappings and lists)."""
    if isinstance(data, dict):
        return {k: strip_markers(v) for k, v in data.items() if k != DELETE_KEY}
    if isinstance(data, list):
        return [strip_markers(v) for v in data]
    return data


def apply_overrides(cfg: dict, overrides: Iterable[str]) -> dict:
    """Apply ``a.b.c=value`` strings (values parsed as YAML) in place and return ``cfg``.

    The key must exist (a typo is an error naming the closest keys); ``+a.b.c=value`` adds a new one.
    """
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        dotted, raw = item.split("=", 1)
        new_key = dotted.startswith("+")
        dotted = dotted[1:] if new_key else dotted
        keys = dotted.strip().split(".")
        try:
            value = _yaml_load(raw)
        except yaml.YAMLError as e:
            raise ConfigError(f"override {item!r}: value is not valid YAML: {e}") from e
        node = cfg
        for i, k in enumerate(keys[:-1]):
            if not isinstance(node, dict) or k not in node:
                missing = ".".join(keys[: i + 1])
                raise ConfigError(f"override {item!r}: parent key '{missing}' does not exist")
            node = node[k]
        if not isinstance(node, dict):
            raise ConfigError(f"override {item!r}: '{'.'.join(keys[:-1])}' is not a mapping")
        if keys[-1] not in node and not new_key:
            close = difflib.get_close_matches(keys[-1], [str(k) for k in node], n=3)
            where = ".".join(keys[:-1]) or "the top level"
            hint = f"; did you mean {', '.join(close)}?" if close else f"; keys there: {sorted(map(str, node))[:12]}"
            raise ConfigError(f"override {item!r}: no key '{keys[-1]}' in {where}{hint} "
                              f"(write '+{dotted.strip()}=...' to add a new key)")
        node[keys[-1]] = _wrap(value) if isinstance(cfg, Config) else value
    return cfg


def load_config(path: Union[str, os.PathLike], overrides: Optional[Sequence[str]] = None) -> Config:
    """Resolve ``path`` (with its ``_base_`` chain) and ``overrides`` into a :class:`Config`."""
    data = strip_markers(_resolve(Path(path), []))
    cfg = Config(data)
    apply_overrides(cfg, overrides or [])
    return cfg


def save_config(cfg: dict, path: Union[str, os.PathLike]) -> None:
    """Write the resolved config as YAML (plain types only)."""
    plain = cfg.to_dict() if isinstance(cfg, Config) else _unwrap(cfg)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(plain, f, sort_keys=False)
