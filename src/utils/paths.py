"""Where a relative input path of a config is looked for (no heavy imports).

The configs name their default inputs relative to the repository (``./checkpoint/pretrained_vq_model/
vq-f8-n256.ckpt``, ``./datasets/kodak``). A relative input path is looked for in the current
directory first (a path given on the command line means that), then under the repository root, so
that a script started from another directory still finds the defaults. Outputs (``ckpt_dir``,
``--save_dir``) stay relative to the current directory.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Union

PathLike = Union[str, os.PathLike]

#: the checkout holding ``src/`` (with ``pip install -e .``, the repository)
REPO_ROOT = Path(__file__).resolve().parents[2]


def candidate_paths(path: PathLike) -> List[Path]:
    """Where ``path`` is looked for, in order: itself (``~`` expanded) if absolute; else the current
    directory, then the repository root."""
    p = Path(os.path.expanduser(str(path)))
    if p.is_absolute():
        return [p]
    here, in_repo = Path.cwd() / p, REPO_ROOT / p
    return [here] if here.resolve() == in_repo.resolve() else [here, in_repo]


def find_input(path: PathLike, kind: str = "any") -> Optional[Path]:
    """The first of :func:`candidate_paths` that exists (``kind``: "file", "dir" or "any"), or None."""
    check = {"file": Path.is_file, "dir": Path.is_dir, "any": Path.exists}[kind]
    return next((c for c in candidate_paths(path) if check(c)), None)


def resolve_input(path: PathLike, kind: str = "any") -> Path:
    """:func:`find_input`, or (nothing found) the path as given with ``~`` expanded, so that the
    caller's own "not found" error names it; :func:`looked_for` says where it was searched."""
    return find_input(path, kind) or Path(os.path.expanduser(str(path)))


def looked_for(path: PathLike) -> str:
    """``"a, b"``: the places :func:`find_input` searched for ``path``, for error messages."""
    return ", ".join(str(c) for c in candidate_paths(path))
