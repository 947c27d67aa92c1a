"""Mixed precision: which autocast dtype and whether a GradScaler, for a mode and a device.

| amp    | CPU                                                   | CUDA                                 | MPS              |
|--------|-------------------------------------------------------|--------------------------------------|------------------|
| auto   | bf16 autocast where bf16 is native or measured faster, else fp32 | fp16 autocast + GradScaler | fp32             |
| bf16   | bf16 autocast (a warning with the measured slowdown where bf16 is emulated) | bf16 autocast (error if unsupported) | bf16 autocast |
| fp16   | mapped to bf16, with a warning                        | fp16 autocast + GradScaler           | fp16 autocast + GradScaler |
| off    | fp32                                                  | fp32                                 | fp32             |

Native bf16 on a CPU means AVX512-BF16 or AMX, as torch reports them (and oneDNN allowed to use
them: ``ONEDNN_MAX_CPU_ISA`` can cap it); without them bf16 matmuls are
emulated and about 400x slower than fp32 (measured on an AVX2 EPYC: 0.3 vs 131 GFLOP/s). Where
the capability is not reported, a timed probe decides (:func:`bf16_matmul_speedup`: one small
matmul in each dtype, a few milliseconds, run once per process): bf16 only where it measured
faster. The log line of "auto" says which precision and why.

fp16 is never used on CPU: CPU fp16 matmuls are about 100x slower than fp32 and the point of a
config written for a GPU is that it still runs on a laptop, so "fp16" is mapped to bf16 there
rather than refused. On Apple MPS "auto" trains in fp32 (autocast there covers fewer ops and the
MAE reference ran MPS without it); an explicit bf16/fp16 uses MPS autocast.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
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


def _onednn_can_use_bf16() -> bool | None:
    """Whether oneDNN (which runs torch's CPU bf16 matmuls) may use bf16 instructions in this
    process; None where torch does not say. False on a bf16 CPU whose ISA is capped, e.g. by
    ``ONEDNN_MAX_CPU_ISA=AVX2`` (containers, reproducibility settings)."""
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    if check is None or not torch.backends.mkldnn.is_available():
        return None
    try:
        return bool(check())
    except Exception:  # an op torch may drop or rename
        return None


def cpu_has_native_bf16() -> tuple[bool, str]:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX tiles) and torch's kernels may
    use it, and what torch reports."""
    capability = torch.backends.cpu.get_cpu_capability()
    flags = {name: getattr(torch.cpu, f"_is_{name}_supported", None) for name in ("avx512_bf16", "amx_tile")}
    found = [name for name, check in flags.items() if check is not None and check()]
    if found and _onednn_can_use_bf16() is False:
        return False, (f"CPU capability {capability}; the CPU has {' and '.join(found)}, but oneDNN may not use "
                       "them in this process (ONEDNN_MAX_CPU_ISA or the build caps its instruction set)")
    if found:
        return True, f"CPU capability {capability} with {' and '.join(found)}"
    return False, f"CPU capability {capability} without AVX512-BF16 or AMX (bf16 matmuls are emulated there)"


_PROBE_SIZE = 256  # n of the probe's n x n matmul: 34 MFLOP, ~0.2 ms in fp32, ~0.1 s where bf16 is emulated
_PROBE_REPEATS = 5


def _best_matmul_seconds(dtype: torch.dtype, repeats: int, give_up_after: float | None = None) -> float:
    a = torch.randn(_PROBE_SIZE, _PROBE_SIZE).to(dtype)
    b = torch.randn(_PROBE_SIZE, _PROBE_SIZE).to(dtype)
    torch.mm(a, b)  # warm-up: first calls pick kernels and allocate
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
        if give_up_after is not None and best > give_up_after:  # emulated: no point timing it again
            break
    return best


@functools.lru_cache(maxsize=1)
def bf16_matmul_speedup() -> float:
    """fp32 time / bf16 time of one 256 x 256 matmul on this CPU (best of a few; > 1: bf16 is faster).

    Measured once per process (cached): a few milliseconds where bf16 is native, about a tenth of
    a second where it is emulated (the bf16 timing stops after its first slow repeat).
    """
    fp32 = _best_matmul_seconds(torch.float32, _PROBE_REPEATS)
    bf16 = _best_matmul_seconds(torch.bfloat16, _PROBE_REPEATS, give_up_after=20 * fp32)
    return fp32 / max(bf16, 1e-9)


def resolve_amp(mode: str, device: torch.device) -> AmpSettings:
    """Turn the `amp` setting into concrete settings for `device` (see the module table)."""
    device_type = device.type
    if mode == "off":
        return AmpSettings(device_type, None, False)
    if device_type == "cpu":
        return _resolve_cpu(mode)
    if device_type == "cuda":
        if mode == "bf16":
            if not torch.cuda.is_bf16_supported():
                raise ConfigError(f"amp='bf16' but {torch.cuda.get_device_name(device)} has no bf16 support; use 'fp16'")
            return AmpSettings("cuda", torch.bfloat16, False)
        return AmpSettings("cuda", torch.float16, True)  # "auto" and "fp16"
    if device_type == "mps":
        if mode == "auto":
            logger.info("amp auto on Apple MPS: fp32 (MPS autocast covers fewer ops; set amp: bf16 or fp16 to try it)")
            return AmpSettings("mps", None, False)
        return AmpSettings("mps", torch.bfloat16 if mode == "bf16" else torch.float16, mode == "fp16")
    if mode == "auto":
        return AmpSettings(device_type, None, False)
    raise ConfigError(f"amp='{mode}' is not supported on device type '{device_type}'; use 'auto' or 'off'")


def _resolve_cpu(mode: str) -> AmpSettings:
    native, why = cpu_has_native_bf16()
    if mode == "auto":
        if native:
            logger.info("amp auto on the CPU: bf16 autocast (%s)", why)
            return AmpSettings("cpu", torch.bfloat16, False)
        speedup = bf16_matmul_speedup()
        use_bf16 = speedup > 1.0
        logger.info("amp auto on the CPU: %s (%s; a timed probe measured bf16 matmuls %s)",
                    "bf16 autocast" if use_bf16 else "fp32", why, _speed_words(speedup))
        return AmpSettings("cpu", torch.bfloat16 if use_bf16 else None, False)
    if mode == "fp16":
        logger.warning("amp='fp16' on CPU is mapped to bf16: fp16 matmuls are ~100x slower there")
    if not native:
        speedup = bf16_matmul_speedup()
        if speedup <= 1.0:
            logger.warning("amp='%s' on a CPU without native bf16 (%s): bf16 matmuls measured %s, so expect "
                           "steps far slower than fp32; use amp: auto or \"off\"", mode, why, _speed_words(speedup))
    return AmpSettings("cpu", torch.bfloat16, False)


def _speed_words(speedup: float) -> str:
    if speedup > 1.0:
        return f"{speedup:.1f}x faster than fp32"
    return f"{1.0 / max(speedup, 1e-9):.0f}x slower than fp32"
