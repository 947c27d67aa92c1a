"""Rank helpers for DistributedDataParallel runs launched by `torchrun`.

Everything here is safe to call in a plain single-process run: it then behaves as rank 0 of a
world of size 1 and every collective is a no-op.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """True when a torch.distributed process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """Global rank of this process; 0 outside distributed runs."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of processes in the group; 1 outside distributed runs."""
    return dist.get_world_size() if is_distributed() else 1


def local_rank() -> int:
    """Rank on this node (torchrun sets LOCAL_RANK); picks the CUDA device."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main_process() -> bool:
    """True on rank 0, the only rank that writes files and calls callbacks."""
    return rank() == 0


def default_device() -> torch.device:
    """cuda:LOCAL_RANK when CUDA is available, else cpu."""
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank())
    return torch.device("cpu")


def setup_distributed(backend: str | None = None) -> bool:
    """Initialise the process group from torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR...).

    Args:
        backend: None picks NCCL when CUDA is available, gloo otherwise.
    Returns:
        True when a process group is (now) initialised, False for a single-process launch
        (WORLD_SIZE unset or 1), in which case nothing is done.
    """
    if is_distributed():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank())  # before init, so NCCL binds each rank to its own GPU
    dist.init_process_group(backend=backend)
    return True


def cleanup_distributed() -> None:
    """Destroy the process group if one is initialised."""
    if is_distributed():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank; no-op outside distributed runs."""
    if is_distributed():
        dist.barrier()


def _collective_device() -> torch.device:
    # NCCL only reduces CUDA tensors; gloo only CPU tensors.
    if is_distributed() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(values: list[float]) -> list[float]:
    """Sum a short list of floats over every rank (one collective); identity outside DDP."""
    if not is_distributed():
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=_collective_device())
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


def any_rank(flag: bool) -> bool:
    """True when `flag` is True on at least one rank; keeps ranks agreeing on skip decisions."""
    if not is_distributed():
        return flag
    return all_reduce_sum([1.0 if flag else 0.0])[0] > 0


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order (all ranks receive the list); [obj] outside DDP."""
    if not is_distributed():
        return [obj]
    gathered: list[Any] = [None] * world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object_list(objects: list[Any], source: int = 0) -> None:
    """Replace `objects` in place by rank `source`'s list (pickled objects); no-op outside DDP."""
    if is_distributed():
        dist.broadcast_object_list(objects, src=source)
