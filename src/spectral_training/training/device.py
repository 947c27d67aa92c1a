"""Which device trains, and how many DataLoader workers feed it.

`device: auto` (the `TrainConfig.device` default) picks, in this order:

1. CUDA (``cuda:LOCAL_RANK``, so each torchrun process drives its own GPU);
2. Apple MPS (``mps``), where PyTorch reports it built and available;
3. the CPU.

An explicit ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` is taken as written, and one that is not
available here is an error naming it and what is available.

`num_workers: auto` gives the loader one worker per core beyond the two the training step uses
(threads of the matmuls and the main process), at most 8: 0 on 2 cores, where a worker takes a
core from the step and costs ~10 % (benchmarks/bench_mae.py, loader section), 2 on 4 cores, ...
"""

from __future__ import annotations

import logging
import os

import torch

from spectral_training.training import distributed
from spectral_training.training.config import ConfigError

logger = logging.getLogger("spectral_training.training")

DEVICE_KINDS = ("auto", "cpu", "cuda", "mps")
_STEP_CORES = 2  # cores the training step keeps for itself before any loader worker
_MAX_AUTO_WORKERS = 8


def mps_available() -> bool:
    """Apple's Metal backend is built into this torch and usable on this machine."""
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_built() and backend.is_available())


def _available() -> str:
    found = ["cpu"]
    if torch.cuda.is_available():
        found.append(f"cuda (x{torch.cuda.device_count()})")
    if mps_available():
        found.append("mps")
    return ", ".join(found)


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """The training device for a setting: ``auto``/None (CUDA, then MPS, then CPU) or a device name.

    Raises:
        ConfigError: a device kind torch does not know, or one this machine lacks.
    """
    if isinstance(spec, torch.device):
        return spec
    if spec is None or spec == "auto":
        if torch.cuda.is_available():
            device, why = torch.device("cuda", distributed.local_rank()), "CUDA is available"
        elif mps_available():
            device, why = torch.device("mps"), "no CUDA; Apple MPS is available"
        else:
            device, why = torch.device("cpu"), "neither CUDA nor Apple MPS is available"
        logger.info("device auto: %s (%s)", device, why)
        return device
    try:
        device = torch.device(spec)
    except (RuntimeError, TypeError) as error:
        raise ConfigError(f"train.device = {spec!r} is no device; use one of {', '.join(DEVICE_KINDS)} "
                          f"or cuda:N") from error
    if device.type not in DEVICE_KINDS:
        raise ConfigError(f"train.device = {spec!r}: device type '{device.type}' is not supported; "
                          f"use one of {', '.join(DEVICE_KINDS)} or cuda:N")
    missing = (device.type == "cuda" and (not torch.cuda.is_available()
                                          or (device.index or 0) >= torch.cuda.device_count())) \
        or (device.type == "mps" and not mps_available())
    if missing:
        raise ConfigError(f"train.device = {spec!r} but this machine has {_available()}; "
                          "use device: auto to pick the best available")
    return device


def cpu_cores() -> int:
    """Cores this process may run on (its affinity mask where the OS has one, else the CPU count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def resolve_num_workers(value: int | str | None, cores: int | None = None) -> int:
    """DataLoader workers for a ``num_workers`` setting: an integer >= 0 as is, ``auto`` from the cores.

    Raises:
        ConfigError: anything but ``auto`` or an integer >= 0.
    """
    if value is None or value == "auto":
        cores = cpu_cores() if cores is None else cores
        workers = max(0, min(_MAX_AUTO_WORKERS, cores - _STEP_CORES))
        logger.info("num_workers auto: %d (%d cores; the step keeps %d, each worker takes one)",
                    workers, cores, _STEP_CORES)
        return workers
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"loader.num_workers = {value!r}; expected 'auto' or an integer >= 0 "
                          "(0 loads in the main process)")
    return value
