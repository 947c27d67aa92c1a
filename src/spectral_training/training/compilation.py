"""``train.compile``: the training forward through ``torch.compile``.

Only the module the training step calls is compiled; checkpoints, EMA and validation use the
plain module, so a checkpoint's keys and a run's resume do not depend on the setting. The first
step pays for the compilation (measured ~1.5 min for the MAE tiny on 2 CPU cores, where the
compiled step then ran ~4 % faster: benchmarks/RESULTS.md), so it pays off on long runs; the
C++ code inductor writes for a CPU needs a C++ compiler, checked here before any step runs.
"""

from __future__ import annotations

import logging
import shutil

import torch
from torch import nn

from spectral_training.training.config import ConfigError, TrainConfig

logger = logging.getLogger("spectral_training.training")


def _check_cpu_compiler(device: torch.device, backend: str) -> None:
    if backend != "inductor" or device.type != "cpu":
        return
    from torch._inductor import config as inductor_config

    compiler = inductor_config.cpp.cxx[0] if isinstance(inductor_config.cpp.cxx, tuple) else inductor_config.cpp.cxx
    names = [compiler] if compiler else ["g++", "clang++", "c++"]
    if not any(shutil.which(name) for name in names):
        raise ConfigError(
            f"train.compile with the inductor backend on a CPU needs a C++ compiler ({' or '.join(names)}), and none "
            "was found on PATH. Install one (e.g. apt-get install g++), or set train.compile=false "
            "(or train.compile_backend=aot_eager, which compiles nothing to C++)."
        )


def compile_for_training(module: nn.Module, config: TrainConfig, device: torch.device) -> nn.Module:
    """``module`` wrapped by ``torch.compile`` as ``config.compile`` asks, or ``module`` itself."""
    if config.compile is False:
        return module
    mode = "default" if config.compile is True else str(config.compile)
    _check_cpu_compiler(device, config.compile_backend)
    logger.info("torch.compile (backend %s, mode %s): the first step compiles the model, later steps reuse it",
                config.compile_backend, mode)
    return torch.compile(module, backend=config.compile_backend, mode=None if mode == "default" else mode)
