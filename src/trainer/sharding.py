"""FSDP beside DDP (``parallel: fsdp`` under torchrun; CUDA with NCCL, or the CPU with gloo).

torch's ``fully_shard`` (FSDP2) shards each top-level child of a model (each member of a
``ModuleList``, such as the transformer blocks) and then the model itself:
every rank holds 1/N of the parameters, gradients and optimizer state, and gathers a unit's
parameters for its forward. Units keep them gathered from forward to backward
(``reshard_after_forward=False``) so that a trainer can differentiate a loss at one layer (the
adaptive GAN weight at ``decoder.conv_out.weight``); between steps they are sharded.

A sharded model's ``state_dict`` holds DTensors: checkpoints go through torch's
``get_model_state_dict`` / ``get_optimizer_state_dict`` with full (unsharded) tensors, so a
checkpoint written under FSDP has the same model keys and shapes as one written under DDP or on
one process. Its optimizer states are keyed by parameter name (torch's distributed format), so
an FSDP run resumes from FSDP checkpoints; the weights of any checkpoint load with
``load_checkpoint``.
"""
from __future__ import annotations

from typing import Any, Dict

import torch
from torch import nn

from src.utils.checkpoint import load_model_state

STRATEGIES = ("ddp", "fsdp")


def is_sharded(module: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(module, FSDPModule)


def shard(model: nn.Module) -> nn.Module:
    """``fully_shard`` each child with parameters, then the model (in place; returns it). Rank 0's
    weights are broadcast first, as DDP does (the ranks' seeds differ)."""
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard

    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            dist.broadcast(t.data, src=0)
    for unit in units(model):
        fully_shard(unit, reshard_after_forward=False)
    fully_shard(model, reshard_after_forward=False)
    return model


def units(model: nn.Module):
    """The modules sharded on their own: each child with parameters, and for a ModuleList /
    ModuleDict (never called itself) each of its members, e.g. the transformer blocks."""
    for child in model.children():
        members = child.children() if isinstance(child, (nn.ModuleList, nn.ModuleDict)) else (child,)
        for m in members:
            if next(m.parameters(), None) is not None:
                yield m


def full_value(t: torch.Tensor) -> torch.Tensor:
    """A DTensor gathered whole (a collective: every rank calls it), any other tensor as is."""
    from torch.distributed.tensor import DTensor

    return t.full_tensor() if isinstance(t, DTensor) else t


def _options(rank0_only: bool, **kw):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=rank0_only, **kw)


def module_state(module: nn.Module, rank0_only: bool = False) -> Dict[str, Any]:
    """A module's state dict with whole tensors (every rank takes part for a sharded module; with
    ``rank0_only`` the other ranks get an empty dict)."""
    if not is_sharded(module):
        return module.state_dict()
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(module, options=_options(rank0_only))


def load_module_state(module: nn.Module, state: Dict[str, Any], strict: bool, source: str) -> None:
    """:func:`~src.utils.checkpoint.load_model_state`, or for a sharded module torch's
    ``set_model_state_dict`` from whole tensors (every rank loads the file)."""
    if not is_sharded(module):
        return load_model_state(module, state, strict=strict, source=source)
    from torch.distributed.checkpoint.state_dict import set_model_state_dict

    own = module_state(module)
    wrong = [k for k in own.keys() & state.keys() if tuple(own[k].shape) != tuple(state[k].shape)]
    if wrong or not own.keys() & state.keys():
        raise RuntimeError(f"{source} does not fit this model (keys shared: {len(own.keys() & state.keys())}, "
                           f"other shapes: {sorted(wrong)[:3]}): wrong file or wrong config")
    result = set_model_state_dict(module, dict(state), options=_options(False, strict=strict))
    if strict and (result.missing_keys or result.unexpected_keys):
        raise RuntimeError(f"strict load of {source} failed: missing {result.missing_keys[:8]}, "
                           f"unexpected {result.unexpected_keys[:8]}")


def owner_of(optimizer: torch.optim.Optimizer, modules: Dict[str, nn.Module]) -> nn.Module:
    """The module among ``modules`` whose parameters ``optimizer`` steps."""
    first = optimizer.param_groups[0]["params"][0]
    for module in modules.values():
        if any(p is first for p in module.parameters()):
            return module
    raise KeyError("an optimizer steps parameters of none of the checkpointed modules")


def optimizer_state(optimizer: torch.optim.Optimizer, owner: nn.Module, rank0_only: bool = True) -> Dict[str, Any]:
    if not is_sharded(owner):
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return get_optimizer_state_dict(owner, optimizer, options=_options(rank0_only))


def load_optimizer_state(optimizer: torch.optim.Optimizer, owner: nn.Module, state: Dict[str, Any]) -> None:
    if not is_sharded(owner):
        return optimizer.load_state_dict(state)
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    if state.get("state") and not all(isinstance(k, str) for k in state["state"]):
        raise RuntimeError("this optimizer state was written by a DDP or single-process run (keyed by number); "
                           "an FSDP run resumes from FSDP checkpoints: start it with load_checkpoint "
                           "(weights only) instead")
    set_optimizer_state_dict(owner, optimizer, optim_state_dict=state, options=_options(False))
