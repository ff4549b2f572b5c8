"""Pretrained weight files the losses and teachers download on first use: their names and the folders
the owning libraries read them from, without importing those libraries (so that a script can check
for them before it builds anything). tests/test_preflight.py checks the names against torchvision.
"""
from __future__ import annotations

import os
from pathlib import Path

#: torchvision ImageNet weights (LPIPS backbones, the ConvNeXt perceptual loss), by model name
TORCHVISION_FILES = {
    "alexnet": "alexnet-owt-7be5be79.pth",
    "vgg16": "vgg16-397923af.pth",
    "squeezenet1_1": "squeezenet1_1-b8a52dc0.pth",
    "convnext_tiny": "convnext_tiny-983f1562.pth",
    "convnext_small": "convnext_small-0c510722.pth",
    "convnext_base": "convnext_base-6075fbad.pth",
    "convnext_large": "convnext_large-ea097f82.pth",
}
#: pytorch-fid's Inception network (FID, KID, beta selection)
FID_INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"
FID_INCEPTION_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{FID_INCEPTION_FILE}"
#: the backbone of ``lpips.LPIPS(net=...)``
LPIPS_BACKBONES = {"alex": "alexnet", "vgg": "vgg16", "squeeze": "squeezenet1_1"}

#: pretrained teachers of VQ-KD / Cluster: our name -> timm model name
TIMM_TEACHERS = {
    "clip_vit_b16": "vit_base_patch16_clip_224.openai",
    "dino_vit_b16": "vit_base_patch16_224.dino",
    "mae_vit_b16": "vit_base_patch16_224.mae",
    "convnext_base": "convnext_base.fb_in22k",
}

VQGAN_SOURCE = ("latent-diffusion's first-stage model vq-f8-n256: https://ommer-lab.com/files/latent-diffusion/"
                "vq-f8-n256.zip (unzip, rename model.ckpt to vq-f8-n256.ckpt); README, 'Pretrained weights'")


def hub_checkpoint_dir() -> Path:
    """The folder torch.hub (and so torchvision and lpips) reads weights from: ``$TORCH_HOME/hub/checkpoints``,
    ``$TORCH_HOME`` defaulting to ``$XDG_CACHE_HOME/torch`` and that to ``~/.cache/torch``."""
    cache = os.environ.get("XDG_CACHE_HOME", os.path.join("~", ".cache"))
    home = os.environ.get("TORCH_HOME", os.path.join(cache, "torch"))
    return Path(os.path.expanduser(home)) / "hub" / "checkpoints"


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache timm reads weights from (``HF_HUB_CACHE``, else ``HF_HOME/hub``)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.path.expanduser(os.environ["HF_HUB_CACHE"]))
    home = os.environ.get("HF_HOME", os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface"))
    return Path(os.path.expanduser(home)) / "hub"


def timm_cache_folder(teacher: str) -> Path:
    """The cache folder of a teacher's timm weights (present once downloaded)."""
    return hf_cache_dir() / ("models--timm--" + TIMM_TEACHERS[teacher])
