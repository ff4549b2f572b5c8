"""Frozen feature teachers for VQ-KD and Cluster: patch features ``(B, D, H/16, W/16)``.

VQ-KD (Peng et al., "BEiT v2: Masked Image Modeling with Vector-Quantized Visual Tokenizers",
2022) regresses a frozen teacher's last-layer patch features; its default teacher is CLIP
ViT-B/16 (Radford et al., 2021). DINO (Caron et al., 2021), MAE (He et al., 2022) and ConvNeXt
(Liu et al., 2022; stage 3, stride 16) are selectable. Pretrained teachers come from ``timm``
(Hugging Face hub cache); ``tiny_vit`` is a randomly initialised local ViT for tests and
quickstarts (seeded, so every rebuild gives the same network).

Teachers are held *outside* their owner's module tree (:class:`TeacherSlot`): they are not in
its ``state_dict`` (checkpoints stay small, the teacher is rebuilt from the config) and not in its
``parameters()`` (DDP and the optimisers never see them), but ``.to(device)`` moves them.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple

import torch
from torch import nn

from src.utils.paths import looked_for, resolve_input
from src.utils.weight_files import TIMM_TEACHERS

from .vit import ViTEncoder

CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class TeacherUnavailable(RuntimeError):
    """A pretrained teacher cannot be built here (timm missing or weights not downloadable)."""


def require_teachers(model_cfg: Mapping[str, Any], train: bool) -> None:
    """Raise :class:`TeacherUnavailable` naming every missing package or weight file of the teachers a
    model section needs (:func:`src.utils.preflight.needed_teachers`), before anything is built: a
    ViT-B student takes minutes to build on a CPU only to stop at its first step."""
    from src.utils.preflight import teacher_problems

    problems = teacher_problems(model_cfg, train)
    if problems:
        raise TeacherUnavailable(problems.replace("found before starting (nothing was built or written)",
                                                  "found before building the model"))


@dataclass(frozen=True)
class TeacherSpec:
    timm_name: str
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]
    kind: str  # "vit" (drop prefix tokens of forward_features) or "convnext" (stage-3 map)
    description: str


TEACHERS: Dict[str, TeacherSpec] = {
    "clip_vit_b16": TeacherSpec(TIMM_TEACHERS["clip_vit_b16"], CLIP_MEAN, CLIP_STD, "vit",
                                "CLIP ViT-B/16 (OpenAI), 768-d"),
    "dino_vit_b16": TeacherSpec(TIMM_TEACHERS["dino_vit_b16"], IMAGENET_MEAN, IMAGENET_STD, "vit",
                                "DINO ViT-B/16, 768-d"),
    "mae_vit_b16": TeacherSpec(TIMM_TEACHERS["mae_vit_b16"], IMAGENET_MEAN, IMAGENET_STD, "vit",
                               "MAE ViT-B/16, 768-d"),
    "convnext_base": TeacherSpec(TIMM_TEACHERS["convnext_base"], IMAGENET_MEAN, IMAGENET_STD, "convnext",
                                 "ConvNeXt-B (ImageNet-22k), stage 3 (stride 16), 512-d"),
}
LOCAL_TEACHERS = ("tiny_vit",)


def hf_cache_dir() -> str:
    """The Hugging Face hub cache timm reads weights from (honours HF_HUB_CACHE / HF_HOME)."""
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except ImportError:
        home = os.environ.get("HF_HOME", os.path.join(os.path.expanduser("~"), ".cache", "huggingface"))
        return os.path.join(home, "hub")


def missing_teacher_message(name: str, spec: TeacherSpec, cause: BaseException) -> str:
    repo = "models--timm--" + spec.timm_name
    return (f"teacher {name!r} ({spec.description}) is unavailable: timm could not load the pretrained "
            f"weights of {spec.timm_name!r} ({type(cause).__name__}: {str(cause).splitlines()[0][:200]}).\n"
            f"  timm reads them from the Hugging Face cache: {hf_cache_dir()}/{repo}\n"
            f"  To get them, on a machine with internet run\n"
            f"      python -c \"import timm; timm.create_model('{spec.timm_name}', pretrained=True)\"\n"
            f"  and copy that folder into the cache here (or set HF_HOME), or download the weight file from\n"
            f"  https://huggingface.co/timm/{spec.timm_name} and set 'teacher.weights: /path/to/model.safetensors'.")


class FrozenTeacher(nn.Module):
    """Normalises a [-1, 1] image and returns the network's patch features ``(B, D, h, w)``."""

    def __init__(self, net: nn.Module, dim: int, mean, std, kind: str, patch_size: int = 16):
        super().__init__()
        self.net, self.dim, self.kind, self.patch_size = net, dim, kind, patch_size
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> "FrozenTeacher":
        return super().train(False)  # always in eval mode

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = ((x + 1) / 2 - self.mean) / self.std
        if self.kind == "local":
            return self.net(x)
        if self.kind == "convnext":
            h = self.net.stem(x)
            for stage in self.net.stages[:3]:
                h = stage(h)
            return h
        tokens = self.net.forward_features(x)[:, getattr(self.net, "num_prefix_tokens", 1):]
        b, n, d = tokens.shape
        gh, gw = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        if gh * gw != n:
            raise ValueError(f"teacher returned {n} patch tokens for a {gh}x{gw} grid")
        return tokens.transpose(1, 2).reshape(b, d, gh, gw)


def _tiny_vit(dim: int = 32, depth: int = 1, num_heads: int = 2, patch_size: int = 16,
              image_size: int = 256, seed: int = 0) -> FrozenTeacher:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = ViTEncoder(image_size, patch_size, dim, depth, num_heads)
    return FrozenTeacher(net, dim, (0.5,) * 3, (0.5,) * 3, "local", patch_size)


def _timm_teacher(name: str, weights: Optional[str], image_size: int) -> FrozenTeacher:
    spec = TEACHERS[name]
    try:
        import timm
    except ImportError as e:
        raise TeacherUnavailable(f"teacher {name!r} needs timm: pip install timm ({e})") from e
    kwargs: Dict[str, Any] = {"pretrained": True, "num_classes": 0}
    if weights:
        found = resolve_input(weights, "file")
        if not found.is_file():
            raise TeacherUnavailable(f"teacher {name!r}: weight file {weights} not found (looked for: "
                                     f"{looked_for(weights)})")
        kwargs["pretrained_cfg_overlay"] = {"file": str(found)}
    if spec.kind == "vit":
        kwargs.update(dynamic_img_size=True, img_size=image_size)
    try:
        net = timm.create_model(spec.timm_name, **kwargs)
    except Exception as e:  # offline: LocalEntryNotFoundError, OSError, ConnectionError, ...
        raise TeacherUnavailable(missing_teacher_message(name, spec, e)) from e
    dim = net.stages[2].blocks[-1].mlp.fc2.out_features if spec.kind == "convnext" else net.num_features
    return FrozenTeacher(net, dim, spec.mean, spec.std, spec.kind)


def build_teacher(name: str = "clip_vit_b16", weights: Optional[str] = None, image_size: int = 224,
                  **local_kwargs: Any) -> FrozenTeacher:
    """A frozen teacher by name: one of :data:`TEACHERS` (timm) or ``tiny_vit`` (local, random).

    ``weights``: a local weight file for a timm teacher (instead of the hub cache).
    ``local_kwargs`` (``dim``, ``depth``, ``num_heads``, ``seed``) size ``tiny_vit``.
    """
    if name == "tiny_vit":
        return _tiny_vit(image_size=image_size, **local_kwargs)
    if name not in TEACHERS:
        raise KeyError(f"unknown teacher {name!r}; valid: {', '.join(list(TEACHERS) + list(LOCAL_TEACHERS))}")
    if local_kwargs:
        raise TypeError(f"teacher {name!r} takes no options {sorted(local_kwargs)} (only tiny_vit does)")
    return _timm_teacher(name, weights, image_size)


def teacher_dim(cfg: Mapping[str, Any]) -> int:
    """Feature width of a teacher section without building it."""
    name = cfg.get("name", "clip_vit_b16")
    if name == "tiny_vit":
        return int(cfg.get("dim", 32))
    return 512 if TEACHERS[name].kind == "convnext" else 768


class TeacherSlot:
    """Builds the teacher on first use and keeps it outside the owner's module tree.

    The owner forwards ``_apply`` (``.to``, ``.cuda``, ``.half``) with :meth:`apply`.
    """

    def __init__(self, cfg: Mapping[str, Any]):
        self.cfg = dict(cfg)
        self.module: Optional[FrozenTeacher] = None

    def get(self, like: torch.Tensor) -> FrozenTeacher:
        if self.module is None:
            self.module = build_teacher(**self.cfg)
        return self.module.to(like.device)

    def apply(self, fn) -> None:
        if self.module is not None:
            self.module._apply(fn)


class TeacherBacked(nn.Module):
    """Base of the models that own a frozen teacher (held in a :class:`TeacherSlot`)."""

    def __init__(self, teacher: Mapping[str, Any]):
        super().__init__()
        self.teacher_cfg = dict(teacher)
        self._teacher = TeacherSlot(self.teacher_cfg)

    def teacher_features(self, x: torch.Tensor) -> torch.Tensor:
        """Frozen teacher's patch features of a [-1, 1] image, ``(B, D, H/16, W/16)``, float32."""
        return self._teacher.get(x)(x).float()

    def _apply(self, fn, recurse: bool = True):
        super()._apply(fn, recurse)
        self._teacher.apply(fn)
        return self
