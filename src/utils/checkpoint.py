"""Checkpoints: atomic writes, a keep policy, auto-resume and step-to-step loading.

Layout (the reference implementation's, so its commands keep working)::

    checkpoint/<exp>/config.yaml                      resolved config of the run
    checkpoint/<exp>/model/comp_model_iter<N>.pth.tar  one file per saved iteration

Each file is a dict: ``comp_model`` (the model's state dict, as in the released
DC-VIC checkpoints), optionally ``discriminator``, ``optimizers``, ``schedulers``,
``scaler``, ``iter`` (iterations completed), ``rng`` and ``config``.
"""
from __future__ import annotations

import logging
import os
import pickle
import random
import re
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional

import numpy as np
import torch

log = logging.getLogger(__name__)

CKPT_RE = re.compile(r"^comp_model_iter(\d+)(K?)\.pth\.tar$")


def iter_tag(it: int) -> str:
    """``500000 -> '500K'``, ``1234 -> '1234'`` (the reference's file naming)."""
    return f"{it // 1000}K" if it % 1000 == 0 and it > 0 else str(it)


def parse_iter_tag(tag: str) -> int:
    tag = str(tag)
    return int(tag[:-1]) * 1000 if tag.upper().endswith("K") else int(tag)


def checkpoint_path(ckpt_dir: os.PathLike, exp: str, it: int) -> Path:
    return Path(ckpt_dir) / exp / "model" / f"comp_model_iter{iter_tag(it)}.pth.tar"


def list_checkpoints(ckpt_dir: os.PathLike, exp: str) -> Dict[int, Path]:
    """Iteration -> path of every complete checkpoint file of ``exp``."""
    folder = Path(ckpt_dir) / exp / "model"
    found = {}
    if folder.is_dir():
        for p in folder.iterdir():
            m = CKPT_RE.match(p.name)
            if m:
                found[int(m.group(1)) * (1000 if m.group(2) else 1)] = p
    return dict(sorted(found.items()))


def latest_checkpoint(ckpt_dir: os.PathLike, exp: str) -> Optional[Path]:
    found = list_checkpoints(ckpt_dir, exp)
    return found[max(found)] if found else None


def atomic_write(path: os.PathLike, write: Callable[[str], None]) -> None:
    """Call ``write(tmp)`` on a temporary file in the same folder, fsync it, then rename over ``path``.

    A crash or a full disk during the write leaves any previous file at ``path`` intact and no
    temporary file behind. The temporary name keeps the suffix (``np.save`` and PIL rely on it).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def remove_stale_temporaries(folder: os.PathLike) -> List[Path]:
    """Delete the temporary files :func:`atomic_write` leaves in ``folder`` when the process is
    killed mid-write (``.<name>.<random>.tmp<suffix>``); call it before anything writes there."""
    removed = []
    folder = Path(folder)
    if folder.is_dir():
        for tmp in folder.glob(".*.tmp*"):
            if tmp.is_file():
                tmp.unlink()
                removed.append(tmp)
                log.warning("removed %s, left by an interrupted checkpoint write", tmp)
    return removed


def atomic_torch_save(obj: Any, path: os.PathLike) -> None:
    """``torch.save`` through :func:`atomic_write`."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            torch.save(obj, f)

    atomic_write(path, write)


def rng_state() -> Dict[str, Any]:
    """Python, NumPy, torch (and CUDA) RNG states as tensors, numbers, strings and tuples only, so
    that a checkpoint holding them loads with ``weights_only=True``."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "numpy": (name, keys.tolist(), pos, has_gauss, cached),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]   # keys: a list (or an array in older files)
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def prune_checkpoints(ckpt_dir: os.PathLike, exp: str, keep_iters: Iterable[int], keep_every: Optional[int],
                      newest: int) -> List[Path]:
    """Delete checkpoints that are neither the newest, listed in ``keep_iters`` nor a multiple of ``keep_every``."""
    keep = set(keep_iters or [])
    removed = []
    for it, path in list_checkpoints(ckpt_dir, exp).items():
        if it == newest or it in keep or (keep_every and it % keep_every == 0):
            continue
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed


class UntrustedCheckpointError(RuntimeError):
    """A checkpoint pickles objects other than tensors, numbers, strings and plain containers."""


#: NumPy globals of the RNG states in checkpoints written before they were stored as lists
_OLD_RNG_GLOBALS = [np.core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


#: terminal colour codes (torch's weights-only message makes a phrase bold with them)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def unpickling_detail(err: Exception) -> str:
    """The line of a weights-only failure that names the refused global (else its first line), as plain text."""
    lines = [line.strip() for line in _ANSI.sub("", str(err)).splitlines() if line.strip()]
    named = next((line for line in lines if "GLOBAL" in line), None)
    if named is not None:   # drop torch's advice to allow-list the global: not for a stranger's file
        return named.split(" was not an allowed global")[0].replace("WeightsUnpickler error: ", "")
    return lines[0] if lines else type(err).__name__


def load_file(path: os.PathLike, map_location: str = "cpu", trust: bool = False) -> Dict[str, Any]:
    """A checkpoint read with ``torch.load(weights_only=True)``: no code from the file runs.

    This project's checkpoints hold only tensors, numbers, strings and plain containers (older
    ones also NumPy arrays of their RNG state, allowed here). A file that pickles anything else
    raises :class:`UntrustedCheckpointError`; ``trust=True`` unpickles it fully (it can run any
    code: only for files whose source you trust).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if trust:
        log.warning("unpickling %s fully (trust=True): it can run code", path)
        return torch.load(path, map_location=map_location, weights_only=False)
    try:
        with torch.serialization.safe_globals(_OLD_RNG_GLOBALS):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        # ``from None``: torch's own message (with terminal colour codes and advice to allow-list the
        # global) would be printed above ours; the line that matters is quoted in ours
        if "GLOBAL" not in str(e):   # not a refused object: the bytes are no (complete) pickle
            raise RuntimeError(f"cannot read checkpoint {path}: {unpickling_detail(e)}") from None
        raise UntrustedCheckpointError(
            f"refusing to load {path}: it pickles objects other than tensors and plain containers "
            f"({unpickling_detail(e)}), and unpickling them can run code. If you trust the file's source, "
            "pass --trust_checkpoint (compress, decompress, eval_kodak, export_model, binary_rate_search, "
            "beta_selection), or load it once with src.utils.checkpoint.load_file(path, trust=True) and save "
            "its state dict") from None
    except Exception as e:  # corrupt or partial file
        raise RuntimeError(f"cannot read checkpoint {path}: {_ANSI.sub('', str(e))}") from e


def model_state_from_file(path: os.PathLike, trust: bool = False) -> Dict[str, torch.Tensor]:
    """The model's state dict from a training checkpoint or a released ``.pth.tar``
    (``trust``: see :func:`load_file`)."""
    ckpt = load_file(path, trust=trust)
    for key in ("comp_model", "model", "state_dict"):
        if isinstance(ckpt, dict) and key in ckpt and isinstance(ckpt[key], dict):
            return ckpt[key]
    if isinstance(ckpt, dict) and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        return ckpt
    raise KeyError(f"{path}: no model state dict found (looked for keys comp_model, model, state_dict)")


def load_model_state(model: torch.nn.Module, state: Dict[str, torch.Tensor], strict: bool = True,
                     source: str = "") -> None:
    """``load_state_dict`` with a readable report of missing / unexpected keys. A state dict that
    shares no key with the model is refused even when ``strict`` is False: loading it would leave
    every weight random (a wrong file or a wrong config), and training would start from scratch."""
    own = model.state_dict()
    if own and state and not own.keys() & state.keys():
        raise RuntimeError(f"{source or 'state dict'} shares none of its {len(state)} keys with the model "
                           f"(its first: {sorted(state)[:3]}; the model's first: {sorted(own)[:3]}): wrong file "
                           "or wrong config")
    resized = ("._quantized_cdf", "._offset", "._cdf_length", ".scale_table")   # entropy tables: resized on load
    wrong = [k for k in own.keys() & state.keys() if not k.endswith(resized)
             and isinstance(state[k], torch.Tensor) and tuple(state[k].shape) != tuple(own[k].shape)]
    if wrong:
        wrong.sort()
        shown = "; ".join(f"{k}: file {tuple(state[k].shape)}, model {tuple(own[k].shape)}" for k in wrong[:3])
        raise RuntimeError(f"{source or 'state dict'} does not fit this model: {len(wrong)} of its {len(state)} "
                           f"tensors have other shapes ({shown}{'; ...' if len(wrong) > 3 else ''}). It was made "
                           "with other layer widths: use the config it was trained with (training checkpoints "
                           "store it under 'config'; toy widths are config/_base_/model/dcvic_tiny.yaml)")
    result = model.load_state_dict(state, strict=False)
    missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    if strict and (missing or unexpected):
        raise RuntimeError(f"strict load of {source or 'state dict'} failed: {len(missing)} missing keys "
                           f"{missing[:8]}{'...' if len(missing) > 8 else ''}, {len(unexpected)} unexpected keys "
                           f"{unexpected[:8]}{'...' if len(unexpected) > 8 else ''}")
    if missing or unexpected:
        log.warning("non-strict load of %s: %d missing keys, %d unexpected keys", source or "state dict",
                    len(missing), len(unexpected))
