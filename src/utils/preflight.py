"""Check a script's inputs before anything heavy is imported or built, and report every problem at once.

A script collects what is wrong with its arguments and its config (missing files and folders, weight
files that are neither cached nor downloadable here, a config that does not load), each with its fix,
and exits with status 2 listing all of them, before it imports torch or builds a model. What can
only be known by building (a checkpoint that does not fit the config) is still reported there.

    pf = Preflight()
    cfg = pf.config(args.config_path, args.opt)
    pf.cli_file("--model_path", args.model_path, "a checkpoint of scripts/train.py or a released .pth.tar")
    pf.config_inputs(cfg, train=False)
    pf.exit_on_problems()       # or: if pf.failed(): return 2

No torch here: the module imports only the standard library, PyYAML and the config loader.
"""
from __future__ import annotations

import importlib.util
import os
import socket
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any, List, Mapping, Optional, Sequence, Tuple

from src.utils.config import Config, ConfigError, load_config
from src.utils.paths import find_input, looked_for
from src.utils.weight_files import (LPIPS_BACKBONES, TIMM_TEACHERS, TORCHVISION_FILES, VQGAN_SOURCE,
                                    hub_checkpoint_dir, timm_cache_folder)

#: hosts the first-use downloads come from
TORCH_HUB_HOST = "download.pytorch.org"
HF_HOST = "huggingface.co"


@lru_cache(maxsize=None)
def can_reach(host: str, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to ``host:443`` opens (a first-use download can work)."""
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _truthy_env(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


class Preflight:
    """Problems found before starting, each as ``(problem, fix)``."""

    def __init__(self) -> None:
        self.problems: List[Tuple[str, str]] = []

    def add(self, problem: str, fix: str) -> None:
        self.problems.append((problem, fix))

    # ------------------------------------------------------------ command-line paths (relative to the cwd)
    def cli_file(self, flag: str, path: Optional[os.PathLike], fix: str) -> bool:
        """``path`` (given with ``flag``) must be a file; None is not checked."""
        return path is None or self._exists(flag, Path(os.path.expanduser(str(path))), "file", fix)

    def cli_dir(self, flag: str, path: Optional[os.PathLike], fix: str) -> bool:
        """``path`` (given with ``flag``) must be a folder; None is not checked."""
        return path is None or self._exists(flag, Path(os.path.expanduser(str(path))), "folder", fix)

    def _exists(self, flag: str, p: Path, kind: str, fix: str) -> bool:
        ok = p.is_file() if kind == "file" else p.is_dir()
        if not ok:
            what = "not found" if not p.exists() else f"is not a {kind}"
            self.add(f"{flag} {p}: {kind} {what} (looked for: {p.absolute()})", fix)
        return ok

    # ------------------------------------------------------------ config and the inputs it names
    def config(self, path: os.PathLike, overrides: Sequence[str] = ()) -> Optional[Config]:
        """The loaded config, or None (and a problem) when it does not load."""
        try:
            return load_config(path, list(overrides))
        except ConfigError as e:
            fix = ("correct the --opt override" if str(e).startswith("override")
                   else "give an existing config file (see config/ and the README)")
            self.add(str(e), fix)
            return None

    def config_input(self, key: str, path: Any, kind: str, fix: str) -> bool:
        """An input path of the config (``key``), looked for as :mod:`src.utils.paths` says."""
        if path is None:
            return True
        if find_input(path, "file" if kind == "file" else "dir") is not None:
            return True
        self.add(f"{key}: {kind} {path} not found (looked for: {looked_for(path)})", fix)
        return False

    def config_inputs(self, cfg: Optional[Mapping[str, Any]], train: bool) -> None:
        """Everything ``cfg`` reads from disk before it runs: the VQGAN, tokenizer checkpoints and, for
        ``train``, the datasets, the loss networks' weights and the teachers'."""
        if cfg is None:
            return
        vq = (cfg.get("subnet") or {}).get("vq_model") or {}
        self.config_input("subnet.vq_model.ckpt_path", vq.get("ckpt_path"), "file",
                          f"put the VQGAN checkpoint there or pass --opt subnet.vq_model.ckpt_path=PATH; "
                          f"the official one is {VQGAN_SOURCE}")
        for key in ("tokenizer_checkpoint", "load_model_from"):
            self.config_input(key, cfg.get(key), "file", "give a checkpoint of scripts/train.py (--opt "
                                                          f"{key}=PATH)")
        if not train:
            return
        data = cfg.get("dataset") or {}
        self._dataset("dataset.train_dataset", data.get("train_dataset"))
        if cfg.get("eval_step"):
            self._dataset("dataset.eval_dataset", data.get("eval_dataset"))
        for key, section in _sections(cfg.get("loss") or {}, "loss"):
            self._loss_weights(key, section)
        for key, teacher in needed_teachers(cfg.get("model") or {}, train=True):
            self.teacher(key, teacher)

    def _dataset(self, key: str, section: Optional[Mapping[str, Any]]) -> None:
        if not section or "root_dir" not in section or section.get("sample_photos"):
            return  # sample_photos fills an empty root_dir itself
        root = section["root_dir"]
        fix = (f"download the data (datasets/README.md) or point {key}.root_dir at it "
               f"(--opt {key}.root_dir=PATH)")
        if not self.config_input(f"{key}.root_dir", root, "folder", fix):
            return
        base = find_input(root, "dir")
        subs = ([f"train_{i}" for i in section["subset_list"]] if section.get("subset_list") is not None
                else [section["split"]] if section.get("split") else [])
        missing = [s for s in subs if not (base / s).is_dir()]
        if missing:
            self.add(f"{key}: {base} has no sub-folder(s) {', '.join(missing)}",
                     f"edit {key}.subset_list / split, or complete the download (datasets/README.md)")

    def _loss_weights(self, key: str, section: Mapping[str, Any]) -> None:
        kind = section.get("type")
        if float(section.get("loss_weight", 1.0) or 0.0) <= 0:
            return
        if kind == "LPIPSLoss" and not section.get("pnet_rand", False):
            model = LPIPS_BACKBONES.get(section.get("net", "alex"))
        elif kind == "ConvNeXtPerceptualLoss" and section.get("pretrained", True):
            model = section.get("model", "convnext_small")
        else:
            return
        if model in TORCHVISION_FILES:
            self.downloadable(f"{key} ({kind}, {model})", hub_checkpoint_dir() / TORCHVISION_FILES[model],
                              TORCH_HUB_HOST, f"https://{TORCH_HUB_HOST}/models/{TORCHVISION_FILES[model]}")

    def teacher(self, key: str, section: Mapping[str, Any]) -> None:
        """A teacher section: ``tiny_vit``, or a timm teacher whose package and weights are here
        (cached, a local ``weights`` file, or the hub reachable)."""
        name = section.get("name", "clip_vit_b16")
        if name == "tiny_vit":
            return
        if name not in TIMM_TEACHERS:
            self.add(f"{key}.name: unknown teacher {name!r}",
                     f"use one of {', '.join(list(TIMM_TEACHERS) + ['tiny_vit'])}")
            return
        if importlib.util.find_spec("timm") is None:
            self.add(f"{key}: teacher {name!r} needs the timm package, which is not installed",
                     'pip install -e ".[teachers]"')
        if section.get("weights"):
            self.config_input(f"{key}.weights", section["weights"], "file",
                              f"download the weights of https://huggingface.co/timm/{TIMM_TEACHERS[name]}")
            return
        folder = timm_cache_folder(name)
        if not folder.is_dir() and (_truthy_env("HF_HUB_OFFLINE") or not can_reach(HF_HOST)):
            self.add(f"{key}: the weights of teacher {name!r} ({TIMM_TEACHERS[name]}) are not in the Hugging Face "
                     f"cache ({folder}) and {HF_HOST} cannot be reached",
                     f"on a machine with internet run python -c \"import timm; timm.create_model("
                     f"'{TIMM_TEACHERS[name]}', pretrained=True)\" and copy that folder here (or set HF_HOME), "
                     f"or set {key}.weights to a local weight file")

    def downloadable(self, what: str, path: Path, host: str, url: str) -> None:
        """A weight file a library downloads on first use: fine when cached or when ``host`` answers."""
        if path.is_file() or can_reach(host):
            return
        self.add(f"{what}: weight file {path.name} is not in {path.parent} and {host} cannot be reached "
                 f"(offline)", f"copy {path.name} (from {url}) into {path.parent}/ (the folder follows "
                 f"$TORCH_HOME)")

    # ------------------------------------------------------------ report
    def message(self) -> str:
        n = len(self.problems)
        lines = [f"error: {n} problem{'s' if n > 1 else ''} found before starting (nothing was built or written):"]
        for i, (problem, fix) in enumerate(self.problems, 1):
            lines += [f"  {i}. {problem}", f"     fix: {fix}"]
        return "\n".join(lines)

    def failed(self) -> bool:
        """Print every problem with its fix (to stderr) and return True; False when there is none."""
        if self.problems:
            print(self.message(), file=sys.stderr)
        return bool(self.problems)

    def exit_on_problems(self) -> None:
        """:meth:`failed`, then exit with status 2; return when there is no problem."""
        if self.failed():
            raise SystemExit(2)


#: models that run their teacher to encode (not only to train): a Cluster tokenizer clusters its features
ENCODES_WITH_TEACHER = ("ClusterTokenizer",)


def needed_teachers(model: Mapping[str, Any], train: bool, prefix: str = "model"):
    """``(dotted key, teacher section)`` of each pretrained teacher a model section needs: its own
    (VQ-KD when training; Cluster always) and that of a frozen ``tokenizer`` inside it (a pixel
    decoder's), which only encodes."""
    teacher = model.get("teacher")
    if isinstance(teacher, Mapping) and (train or model.get("type") in ENCODES_WITH_TEACHER):
        yield f"{prefix}.teacher", teacher
    inner = model.get("tokenizer")
    if isinstance(inner, Mapping):
        yield from needed_teachers(inner, train=False, prefix=f"{prefix}.tokenizer")


def teacher_problems(model: Mapping[str, Any], train: bool) -> Optional[str]:
    """The report of every missing teacher package or weight file a model section needs (None: all
    there); the trainers and :func:`src.zoo.tools.load_tokenizer` raise it before building."""
    pf = Preflight()
    for key, teacher in needed_teachers(model, train):
        pf.teacher(key, teacher)
    return pf.message() if pf.problems else None


def _sections(node: Mapping[str, Any], prefix: str):
    """``(dotted key, mapping)`` of every mapping with a ``type`` below ``node``."""
    for k, v in node.items():
        if isinstance(v, Mapping):
            if "type" in v:
                yield f"{prefix}.{k}", v
            yield from _sections(v, f"{prefix}.{k}")


MODEL_FILE_FIX = ("give a checkpoint written by scripts/train.py (checkpoint/<exp>/model/*.pth.tar) or a released "
                  ".pth.tar (README, 'Pretrained weights')")


def codec_inputs(config_path: os.PathLike, overrides: Sequence[str], model_path: Optional[os.PathLike],
                 dirs: Mapping[str, Tuple[Optional[os.PathLike], str]] = {},
                 files: Mapping[str, Tuple[Optional[os.PathLike], str]] = {},
                 pf: Optional[Preflight] = None) -> Preflight:
    """What the scripts that load a codec check: the config (and its VQGAN), ``--model_path``, and their
    own ``dirs`` / ``files`` (``{flag: (path, fix)}``), added to the problems ``pf`` already holds.
    A script does ``if codec_inputs(...).failed(): return 2``."""
    pf = pf or Preflight()
    cfg = pf.config(config_path, overrides)
    pf.cli_file("--model_path", model_path, MODEL_FILE_FIX)
    for flag, (path, fix) in dirs.items():
        pf.cli_dir(flag, path, fix)
    for flag, (path, fix) in files.items():
        pf.cli_file(flag, path, fix)
    pf.config_inputs(cfg, train=False)
    return pf


def training_inputs(config_path: os.PathLike, overrides: Sequence[str] = ()) -> Tuple[Preflight, Optional[Config]]:
    """What the training scripts check before building a trainer: the config and what it reads."""
    pf = Preflight()
    cfg = pf.config(config_path, overrides)
    pf.config_inputs(cfg, train=True)
    return pf, cfg
