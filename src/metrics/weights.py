"""Pretrained weights needed by the learned metrics, and a clear error when they are missing.

LPIPS, DISTS and the FID/KID Inception network all download ImageNet-trained weights on
first use (into the torch hub cache). On a machine without internet that download fails
deep inside torchvision; :func:`load_or_explain` turns that failure into a
:class:`MetricUnavailable` whose message names each file and the folder it must be put in,
so that a caller can skip the metric and compute the others.
"""
from __future__ import annotations

import sys
import urllib.error
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional, TypeVar

import torch

T = TypeVar("T")


class MetricUnavailable(RuntimeError):
    """A metric cannot be computed here (usually: its pretrained weights cannot be loaded)."""


@dataclass(frozen=True)
class WeightFile:
    """One weight file a metric needs: its file name, download URL and expected folder."""

    name: str
    url: str  # where to get it: a download URL or a short instruction
    folder: str = "hub"  # "hub": torch hub checkpoints dir; "prefix": sys.prefix

    def directory(self) -> Path:
        """The folder the owning package reads this file from (honours ``TORCH_HOME``)."""
        if self.folder == "prefix":
            return Path(sys.prefix)
        return Path(torch.hub.get_dir()) / "checkpoints"

    def path(self) -> Path:
        """Full path the package expects."""
        return self.directory() / self.name


# File names found by trying each package offline (see tests/test_metrics.py).
ALEXNET = WeightFile("alexnet-owt-7be5be79.pth",
                     "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth")
VGG16 = WeightFile("vgg16-397923af.pth", "https://download.pytorch.org/models/vgg16-397923af.pth")
DISTS_ALPHA_BETA = WeightFile(
    "weights.pt", "reinstall DISTS_pytorch (pip puts it in sys.prefix), or copy "
    "DISTS_pytorch/weights.pt from github.com/dingkeyan93/DISTS", folder="prefix")
FID_INCEPTION = WeightFile(
    "pt_inception-2015-12-05-6726825d.pth",
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
    "pt_inception-2015-12-05-6726825d.pth")

METRIC_WEIGHTS: dict[str, tuple[WeightFile, ...]] = {
    "lpips": (ALEXNET,),
    "dists": (VGG16, DISTS_ALPHA_BETA),
    "fid": (FID_INCEPTION,),
    "kid": (FID_INCEPTION,),
    "fid/kid": (FID_INCEPTION,),  # one Inception network serves both
    "is": (FID_INCEPTION,),       # Inception Score: the same network's 1008-class layer
}

# Errors that mean "the weights could not be fetched or read", not a bug in our code.
_LOAD_ERRORS = (urllib.error.URLError, OSError, ConnectionError, TimeoutError, EOFError)


def missing_weights_message(metric: str, cause: BaseException | None = None) -> str:
    """Explain which files ``metric`` needs and where to put them."""
    lines = [f"metric '{metric}' is unavailable: its pretrained weights could not be loaded"
             + (f" ({type(cause).__name__}: {cause})" if cause is not None else "") + "."]
    for wf in METRIC_WEIGHTS[metric]:
        state = "present" if wf.path().is_file() else "MISSING"
        lines.append(f"  - put '{wf.name}' in '{wf.directory()}' [{state}] "
                     f"(source: {wf.url})")
    lines.append("  The torch hub folder follows $TORCH_HOME (default ~/.cache/torch/hub/checkpoints).")
    return "\n".join(lines)


def load_or_explain(metric: str, build: Callable[[], T]) -> T:
    """Call ``build()``; on a download/read failure raise :class:`MetricUnavailable`.

    ``build`` may still download the files when there is internet; only a failure is
    translated. The original exception is chained as ``__cause__``.
    """
    try:
        return build()
    except _LOAD_ERRORS as err:
        raise MetricUnavailable(missing_weights_message(metric, err)) from err
    except RuntimeError as err:  # truncated download or wrong file: torch.load / hash check
        text = str(err).lower()
        if not any(k in text for k in ("pytorchstreamreader", "invalid hash", "unpickl", "zip archive")):
            raise
        raise MetricUnavailable(missing_weights_message(metric, err)) from err


class OptionalMetric:
    """Build a learned metric (``fn``), or leave ``fn`` None and note in ``skipped[name]`` why
    (not requested, or weights missing offline). With a ``networks`` dict (a sweep over
    checkpoints) each network is built, or found missing, once."""

    def __init__(self, name: str, enabled: bool, build: Callable[[], Any], skipped: Dict[str, str],
                 networks: Optional[Dict[str, Any]] = None):
        self.fn = None
        if not enabled:
            skipped[name] = "not requested"
            return
        if networks is not None and name in networks:
            self.fn, reason = networks[name]
            if reason:
                skipped[name] = reason
            return
        reason = None
        try:
            self.fn = build()
        except (MetricUnavailable, ImportError) as e:
            reason = skipped[name] = str(e)
        if networks is not None:
            networks[name] = (self.fn, reason)
