"""Mixed precision: which autocast dtype and whether a GradScaler, for a mode and a device.

| amp    | CPU                                              | CUDA                                   |
|--------|--------------------------------------------------|----------------------------------------|
| auto   | bf16 autocast where the CPU has native bf16, else fp32 | fp16 autocast + GradScaler       |
| bf16   | bf16 autocast (a warning where bf16 is emulated) | bf16 autocast (error if unsupported)   |
| fp16   | mapped to bf16, with a warning                   | fp16 autocast + GradScaler             |
| off    | fp32                                             | fp32                                   |

Native bf16 on a CPU means AVX512-BF16 or AMX, as torch reports them; without them bf16 matmuls are
emulated and about 400x slower than fp32 (measured on an AVX2 EPYC: 0.3 vs 131 GFLOP/s), so
"auto" trains in fp32 there and says why.

fp16 is never used on CPU: CPU fp16 matmuls are about 100x slower than fp32 and the point of a
config written for a GPU is that it still runs on a laptop, so "fp16" is mapped to bf16 there
rather than refused. Other devices (mps, ...) run without autocast under "auto".
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import ContextManager

import torch

from spectral_training.training.config import ConfigError

logger = logging.getLogger("spectral_training.training")


@dataclass(frozen=True)
class AmpSettings:
    """What the engine does for mixed precision on one device."""

    device_type: str
    dtype: torch.dtype | None  # None = no autocast
    use_grad_scaler: bool

    def autocast(self) -> ContextManager[object]:
        """The context to run a forward pass in."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def make_grad_scaler(self) -> torch.amp.GradScaler | None:
        """A GradScaler for fp16 on CUDA, else None (bf16 has fp32's range and needs none)."""
        return torch.amp.GradScaler(self.device_type) if self.use_grad_scaler else None

    def describe(self) -> str:
        if self.dtype is None:
            return "fp32"
        name = str(self.dtype).removeprefix("torch.")
        return f"{name} autocast" + (" + GradScaler" if self.use_grad_scaler else "")


def cpu_has_native_bf16() -> tuple[bool, str]:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX tiles), and what torch reports."""
    capability = torch.backends.cpu.get_cpu_capability()
    flags = {name: getattr(torch.cpu, f"_is_{name}_supported", None) for name in ("avx512_bf16", "amx_tile")}
    found = [name for name, check in flags.items() if check is not None and check()]
    if found:
        return True, f"CPU capability {capability} with {' and '.join(found)}"
    return False, f"CPU capability {capability} without AVX512-BF16 or AMX (bf16 matmuls are emulated there)"


def resolve_amp(mode: str, device: torch.device) -> AmpSettings:
    """Turn the `amp` setting into concrete settings for `device` (see the module table)."""
    device_type = device.type
    if mode == "off":
        return AmpSettings(device_type, None, False)
    if device_type == "cpu":
        native, why = cpu_has_native_bf16()
        if mode == "auto":
            logger.info("amp auto on the CPU: %s (%s)", "bf16 autocast" if native else "fp32", why)
            return AmpSettings("cpu", torch.bfloat16 if native else None, False)
        if mode == "fp16":
            logger.warning("amp='fp16' on CPU is mapped to bf16: fp16 matmuls are ~100x slower there")
        if not native:
            logger.warning("amp='%s' on a CPU without native bf16 (%s): expect steps far slower than fp32; "
                           "use amp: auto or \"off\"", mode, why)
        return AmpSettings("cpu", torch.bfloat16, False)
    if device_type == "cuda":
        if mode == "bf16":
            if not torch.cuda.is_bf16_supported():
                raise ConfigError(f"amp='bf16' but {torch.cuda.get_device_name(device)} has no bf16 support; use 'fp16'")
            return AmpSettings("cuda", torch.bfloat16, False)
        return AmpSettings("cuda", torch.float16, True)  # "auto" and "fp16"
    if mode == "auto":
        return AmpSettings(device_type, None, False)
    raise ConfigError(f"amp='{mode}' is not supported on device type '{device_type}'; use 'auto' or 'off'")
