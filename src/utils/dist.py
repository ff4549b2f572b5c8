"""Distributed helpers: ``torchrun`` sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR, plain runs see one
process. A run under torchrun joins a process group also with one process (a 1-GPU check of the NCCL start)."""
from __future__ import annotations

import os
from typing import Dict, List, Optional

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    return rank() == 0


def launched_by_torchrun() -> bool:
    return all(key in os.environ for key in ("RANK", "WORLD_SIZE", "MASTER_ADDR"))


def init_distributed(device: str) -> torch.device:
    """Join the process group started by torchrun (NCCL on GPU, gloo on CPU); return this rank's device."""
    if not launched_by_torchrun():
        return torch.device(device)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device.startswith("cuda") and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not is_distributed():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return torch.device(f"cuda:{local_rank}") if use_cuda else torch.device("cpu")


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def cleanup() -> None:
    if is_distributed():
        dist.destroy_process_group()


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    if not is_distributed():
        return value
    value = value.detach().clone()
    dist.all_reduce(value)
    return value / world_size()


def all_reduce_scalars(logs: Dict[str, float]) -> Dict[str, float]:
    """The mean over all ranks of each logged scalar (a collective: every rank must call it).

    Ranks may log different keys (a term one rank skipped): each key is averaged over the ranks
    that logged it. One process: ``logs`` unchanged. Non-numbers are dropped.
    """
    logs = {k: float(v) for k, v in logs.items() if isinstance(v, (int, float))}
    if not is_distributed():
        return logs
    gathered: List[Optional[Dict[str, float]]] = [None] * world_size()
    dist.all_gather_object(gathered, logs)
    keys = dict.fromkeys(k for row in gathered for k in row)
    return {k: sum(row[k] for row in gathered if k in row) / sum(k in row for row in gathered) for k in keys}
