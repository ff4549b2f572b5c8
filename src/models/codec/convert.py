"""Load the reference DC-VIC checkpoints (``dc_vic_patchgan.pth.tar``, ``dc_vic_oasis.pth.tar``).

Our parameter names equal the reference's, so no renaming of network weights is needed. What can
differ is incidental: a ``module.`` prefix (DDP), CompressAI < 1.2 names of the bottleneck
(``_matrix0`` -> ``matrices.0``), and constant buffers that another CompressAI version does not
store (``likelihood_lower_bound.bound``, ``scale_bound``, ``target``). ``reference_state_dict``
normalises all of that; the checkpoint's VQGAN weights (``vq_model.*``) are part of it.

    ckpt = load_checkpoint_file(path)            # {"comp_model": state dict, ...}
    model.load_state_dict(reference_state_dict(ckpt, model), strict=True)
    model.update(force=False)                    # CDFs are usually stored; else they are built
"""
from __future__ import annotations

import logging
from typing import Any, Dict, Mapping, Optional

import torch
from compressai.models.utils import remap_old_keys
from torch import nn

logger = logging.getLogger(__name__)

#: constant (non-learned) buffers of CompressAI's entropy models, by key suffix
CONSTANT_BUFFER_SUFFIXES = (".likelihood_lower_bound.bound", ".lower_bound_scale.bound",
                            ".scale_bound", "entropy_model_z.target")


def reference_state_dict(ckpt: Mapping[str, Any], model: Optional[nn.Module] = None,
                         key: str = "comp_model") -> Dict[str, torch.Tensor]:
    """The model state dict of a reference checkpoint, ready for a strict ``load_state_dict``.

    ``ckpt`` is the loaded file (``ckpt[key]`` holds the weights) or the state dict itself. With
    ``model``, constant CompressAI buffers missing from the file are taken from the model, and
    unexpected ones are dropped (logged); learned tensors are never invented.
    """
    sd = ckpt[key] if key in ckpt else ckpt
    sd = {k[7:] if k.startswith("module.") else k: v for k, v in sd.items()}
    sd = dict(remap_old_keys("entropy_model_z", sd))
    if model is None:
        return sd
    own = model.state_dict()
    for k in own.keys() - sd.keys():
        if k.endswith(CONSTANT_BUFFER_SUFFIXES):
            sd[k] = own[k].clone()
            logger.info("reference checkpoint lacks constant buffer %s; using the model's", k)
    for k in sd.keys() - own.keys():
        if k.endswith(CONSTANT_BUFFER_SUFFIXES):
            logger.info("dropping constant buffer %s that this CompressAI version lacks", k)
            del sd[k]
    return sd


def load_reference_checkpoint(model: nn.Module, path: str, strict: bool = True):
    """Load ``path`` (a reference ``.pth.tar``) into ``model`` and build the CDF tables."""
    from src.models.vq.vqgan import load_checkpoint_file

    result = model.load_state_dict(reference_state_dict(load_checkpoint_file(path), model),
                                   strict=strict)
    model.update(force=False)
    return result
