"""The tiny training problem as a function torchrun workers can import (tests/reliability on PYTHONPATH).

`train_tiny` builds the tiny autoencoder of tests/training/tiny_problem.py without dropout or
augmentation (so nothing draws from a rank's own RNG) and trains it with the engine; under
`launch` every rank runs it, and rank 0's return value comes back.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path

import torch

from spectral_training.training import distributed, fit

_TINY = Path(__file__).resolve().parents[1] / "training" / "tiny_problem.py"
_NAME = "spectral_training_tests_tiny_problem"
if _NAME not in sys.modules:
    spec = importlib.util.spec_from_file_location(_NAME, _TINY)
    sys.modules[_NAME] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sys.modules[_NAME])
tiny = sys.modules[_NAME]

SETTINGS = dict(epochs=2, checkpoint_every_steps=2, warmup_steps=2)
GLOBAL_BATCH = 8


def pausing_forward(pause_dir: Path | None, rank: int, call: int):
    """forward_fn that parks rank `rank` before its training call number `call` (0-based), its pid in
    pause_dir/paused, so that the test can kill it from outside."""
    calls = {"n": 0}

    def forward(model, batch):
        if model.training and pause_dir is not None and distributed.rank() == rank:
            if calls["n"] == call:
                (pause_dir / "paused.tmp").write_text(str(os.getpid()))
                os.replace(pause_dir / "paused.tmp", pause_dir / "paused")
                time.sleep(300)
            calls["n"] += 1
        return model(batch["cube"])

    return forward


def train_tiny(run_dir: Path, pause_dir: Path | None = None, pause_call: int = -1, **settings) -> dict:
    """Train 2 epochs of 48 samples at a global batch of 8 (12 steps); returns weights and losses.
    ``settings`` are more TrainConfig fields (e.g. compile)."""
    torch.set_num_threads(1)
    train_loader, val_loader = tiny.build_loaders(batch_size=GLOBAL_BATCH)
    model = tiny.build_model(dropout=0.0)
    result = fit(model, train_loader, val_loader, tiny.tiny_config(**SETTINGS, **settings), run_dir=Path(run_dir),
                 forward_fn=pausing_forward(pause_dir, 1, pause_call))
    return {"weights": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
            "history": [(e["train_loss"], e["val_loss"]) for e in result.history], "steps": result.steps,
            "resumed": result.resumed, "stopped_reason": result.stopped_reason,
            "world_size": distributed.world_size()}
