"""Loading the entropy coder's tables, whose sizes depend on the weights they were built from."""
from __future__ import annotations

from typing import Mapping

import torch
from compressai.entropy_models import EntropyBottleneck, GaussianConditional
from compressai.models.utils import update_registered_buffers
from torch import nn

_TABLES = ["_quantized_cdf", "_offset", "_cdf_length"]


def resize_entropy_buffers(module: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Give every CompressAI entropy model in ``module`` the table sizes stored in ``state_dict``
    (CompressAI's ``update_registered_buffers``), so that a strict ``load_state_dict`` of a file with
    built tables works on a model whose tables are empty or of another size."""
    for name, m in module.named_modules():
        if isinstance(m, EntropyBottleneck):
            names = _TABLES
        elif isinstance(m, GaussianConditional):
            names = _TABLES + ["scale_table"]
        else:
            continue
        present = [b for b in names if f"{name}.{b}" in state_dict]
        if present:
            update_registered_buffers(m, name, present, dict(state_dict), policy="resize")
