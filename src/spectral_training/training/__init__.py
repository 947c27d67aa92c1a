"""The shared training engine: plain PyTorch (no Kedro, no MLflow).

    from spectral_training.training import TrainConfig, fit, make_loader

    config = TrainConfig.from_dict(params["train"], source="vit.train")
    train_loader = make_loader(train_set, batch_size=64, shuffle=True, seed=config.seed, num_workers=4)
    val_loader = make_loader(val_set, batch_size=64, shuffle=False, seed=config.seed)
    result = fit(model, train_loader, val_loader, config, run_dir=run_dir, metadata=metadata)

Modules, one job each: config (TrainConfig), engine (fit: the epoch loop), step (one
accumulation window, the model contract), validation (one validation pass), state (FitResult,
progress, the best-metric tracker, EpochMetrics), run_state (checkpoint contents, resume,
rollback), data (make_loader), checkpoint (atomic files, load_checkpoint), guards (NaN/Inf and
bad-batch handling), optim (timm optimizer, scheduler, EMA), amp (mixed precision), rng (seeding,
RNG state), signals (SIGTERM/SIGINT), callbacks (TrainingCallback), distributed (rank helpers),
preflight (checks before training).
"""

from spectral_training.training.amp import AmpSettings, resolve_amp
from spectral_training.training.callbacks import StopTraining, TrainingCallback
from spectral_training.training.checkpoint import (
    CheckpointError,
    atomic_torch_save,
    load_checkpoint,
    to_checkpoint_safe,
)
from spectral_training.training.config import ConfigError, TrainConfig
from spectral_training.training.data import EpochBatchSampler, SeededSampleDataset, make_loader
from spectral_training.training.distributed import (
    cleanup_distributed,
    is_distributed,
    is_main_process,
    rank,
    setup_distributed,
    world_size,
)
from spectral_training.training.engine import fit
from spectral_training.training.guards import ContractError, TrainingError
from spectral_training.training.rng import seed_everything
from spectral_training.training.state import STOP_REASONS, EpochMetrics, FitResult
from spectral_training.training.step import default_forward, move_to_device

__all__ = [
    "AmpSettings",
    "CheckpointError",
    "ConfigError",
    "ContractError",
    "EpochBatchSampler",
    "EpochMetrics",
    "FitResult",
    "STOP_REASONS",
    "SeededSampleDataset",
    "StopTraining",
    "TrainConfig",
    "TrainingCallback",
    "TrainingError",
    "atomic_torch_save",
    "cleanup_distributed",
    "default_forward",
    "fit",
    "is_distributed",
    "is_main_process",
    "load_checkpoint",
    "make_loader",
    "move_to_device",
    "rank",
    "resolve_amp",
    "seed_everything",
    "setup_distributed",
    "to_checkpoint_safe",
    "world_size",
]
