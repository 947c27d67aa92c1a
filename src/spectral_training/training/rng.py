"""Random number generator state: seeding, capture into checkpoint-safe form, restore.

A checkpoint must load with `torch.load(weights_only=True)`, so every state is stored as tensors,
plain lists, ints, floats and strings: numpy's MT19937 key becomes an int64 tensor and Python's
`random` state a list of ints.
"""

from __future__ import annotations

import contextlib
import os
import random
from typing import Any, Iterator

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and every CUDA device), numpy's global RNG and Python's `random`."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def mix_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from several integers (e.g. seed, epoch), unlike `seed + epoch`,
    which gives seed 1/epoch 0 the same order as seed 0/epoch 1."""
    state = np.random.SeedSequence([int(p) % 2**63 for p in parts]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31 | int(state[1]) >> 1) % 2**63


def capture_rng_state() -> dict[str, Any]:
    """Every global RNG state of this process, as checkpoint-safe values.

    Returns:
        {"torch_cpu": uint8 tensor, "torch_cuda": [uint8 tensor per device], "numpy": {...},
         "python": {...}}
    """
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    version, internal_state, gauss_next = random.getstate()
    return {
        "torch_cpu": torch.get_rng_state(),
        "torch_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "python": {"version": int(version), "state": [int(v) for v in internal_state], "gauss_next": gauss_next},
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Put back a state made by `capture_rng_state` (CUDA states only when the device count matches)."""
    torch.set_rng_state(state["torch_cpu"].cpu())
    cuda_states = state.get("torch_cuda") or []
    if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda_states])
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["kind"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["position"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    python_state = state["python"]
    random.setstate((python_state["version"], tuple(python_state["state"]), python_state["gauss_next"]))


@contextlib.contextmanager
def isolated_rng(seed: int) -> Iterator[None]:
    """Run a block with every global RNG seeded to `seed`, then put the previous states back.

    Used for validation: random masking in an MAE then draws the same masks every epoch (a
    steadier val loss), and the training RNG stream is the same whatever the val set size.
    """
    saved = capture_rng_state()
    try:
        seed_everything(seed)
        yield
    finally:
        restore_rng_state(saved)


@contextlib.contextmanager
def deterministic_algorithms(enabled: bool) -> Iterator[None]:
    """Turn on torch's deterministic kernels for a block (no-op when `enabled` is False)."""
    if not enabled:
        yield
        return
    previous_algorithms = torch.are_deterministic_algorithms_enabled()
    previous_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    previous_cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    # cuBLAS needs this workspace setting to be deterministic; it must be set before first use.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous_algorithms, warn_only=previous_warn_only)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = previous_cudnn
