"""The real spectral MAE at its tiniest, trained by the engine: importable by path from subprocess scripts.

4-band 4 x 4 cubes (tests/training/tiny_problem.py, with random flips and noise from the global
RNG), a MaskedAutoencoderViT of one encoder and one decoder block of width 16 on 2 x 2 x 2 patches
with random masking (the global RNG again): everything exact resume must restore.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any, Iterable

import torch

from spectral_training.models.mae import build_mae
from spectral_training.training import TrainConfig, TrainingCallback, fit, make_loader

_NAME = "spectral_training_tests_tiny_problem"
if _NAME not in sys.modules:
    _spec = importlib.util.spec_from_file_location(_NAME, Path(__file__).resolve().parents[1] / "training" / "tiny_problem.py")
    sys.modules[_NAME] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules[_NAME])
tiny = sys.modules[_NAME]

TRAIN_SAMPLES, VAL_SAMPLES, BATCH = 24, 8, 4
STEPS_PER_EPOCH = TRAIN_SAMPLES // BATCH
SETTINGS = dict(epochs=4, lr=2e-3, warmup_steps=3, amp="off", progress=False, checkpoint_every_steps=4,
                log_every_steps=1000, seed=0, ema=True)


def build_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_mae("tiny", 4, 4, spatial_patch=2, spectral_patch=2, embed_dim=16, depth=1, num_heads=2,
                     decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2, mask_ratio=0.5)


def train(run_dir: Path, callbacks: Iterable[TrainingCallback] = (), forward_fn: Any = None) -> tuple[Any, Any]:
    """Train the tiny MAE in run_dir (resuming from last.pt when there is one); returns (model, FitResult)."""
    model = build_model()
    train_loader = make_loader(tiny.CubeDataset(TRAIN_SAMPLES, seed=1, augment=True), BATCH, shuffle=True, seed=0)
    val_loader = make_loader(tiny.CubeDataset(VAL_SAMPLES, seed=2), BATCH, shuffle=False, seed=0)
    config = TrainConfig.from_dict(SETTINGS, source="mae_problem")
    result = fit(model, train_loader, val_loader, config, run_dir=run_dir, callbacks=list(callbacks),
                 forward_fn=forward_fn, metadata={"bands": ["b1", "b2", "b3", "b4"]})
    return model, result
