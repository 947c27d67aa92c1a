"""A run's state on disk: the checkpoint dict, resume, rollback, and moving a previous run aside.

Exact resume: the engine owns the data order (see `data.make_loader`), checkpoints at step
granularity with every RNG state, and a resumed run restarts the interrupted epoch at the next
batch without loading the ones already done. On CPU a run killed at any point and resumed ends
with bit-identical weights to a run never interrupted.

Checkpoint keys (format CHECKPOINT_FORMAT_VERSION; all plain values or tensors, so
`torch.load(weights_only=True)` reads them): format_version, model, optimizer, scheduler,
scaler, ema {module}, rng {world_size, per_rank}, data_order, progress, guard, early_stopping
(the BestTracker; older files hold only best_val_loss / best_epoch / epochs_without_improvement),
history, config, metadata, stopped_reason, torch_version, saved_at.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping

import torch

from spectral_training.training import distributed
from spectral_training.training.checkpoint import (
    CHECKPOINT_FORMAT_VERSION,
    CheckpointError,
    CheckpointFiles,
    load_checkpoint,
    remove_stale_temp_files,
)
from spectral_training.training.config import RESUME_SAFE_FIELDS, TrainConfig
from spectral_training.training.guards import GuardState
from spectral_training.training.rng import capture_rng_state, mix_seed, restore_rng_state, seed_everything
from spectral_training.training.state import TERMINAL_REASONS, BestTracker, Progress, RunState
from spectral_training.training.step import Learner

logger = logging.getLogger("spectral_training.training")


class RunCheckpoints:
    """Reads and writes the checkpoints of one run directory for one `fit` call (rank 0 writes)."""

    def __init__(self, run_dir: Path, config: TrainConfig, learner: Learner, metadata: dict[str, Any], *,
                 engine_sampler: bool) -> None:
        self.run_dir = Path(run_dir)
        self.files = CheckpointFiles(self.run_dir)
        self.config = config
        self.learner = learner
        self.metadata = metadata
        self.engine_sampler = engine_sampler
        self.rank = distributed.rank()
        self.world_size = distributed.world_size()
        self.is_main = distributed.is_main_process()
        _warn_if_ema_resume_is_inexact(learner)

    def prepare(self) -> None:
        """Create run_dir and clear temp files a killed writer left (rank 0), then sync ranks."""
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            remove_stale_temp_files(self.run_dir)
        distributed.barrier()

    # ------------------------------------------------------------------ start or resume
    def resume_or_start(self, state: RunState) -> tuple[bool, str | None]:
        """Load last.pt into `state` and the learner when resuming, else seed a fresh run.

        Returns (resumed, finished reason): the reason is the stored stop reason when the
        checkpointed run had already ended for good, else None.
        """
        config = self.config
        last_exists = self.files.last.exists()
        if config.resume is True and not last_exists:
            raise CheckpointError(f"resume: true but {self.files.last} does not exist; use resume: auto to start "
                                  "fresh when there is nothing to resume")
        if config.resume in ("auto", True) and last_exists:
            checkpoint = load_checkpoint(self.files.last, map_location=self.learner.device)
            self._resume_from(checkpoint, state)
            stored_reason = checkpoint.get("stopped_reason")
            if stored_reason in TERMINAL_REASONS:
                return True, stored_reason
            if state.progress.epoch >= config.epochs:
                return True, "completed"
            if config.max_steps is not None and state.progress.global_step >= config.max_steps:
                return True, "max_steps"
            return True, None
        if config.resume is False and self.is_main:
            self._move_previous_run_aside()
        distributed.barrier()
        seed_everything(config.seed + self.rank)
        self.learner.lr.apply(0)
        return False, None

    def _move_previous_run_aside(self) -> None:
        """resume: false in a run_dir with checkpoints: move them to previous-<time>/ rather than
        overwrite or mix them with the new run's."""
        files = self.files
        existing = [p for p in (files.last, files.rollback, files.best, files.report) if p.exists()]
        if not existing:
            return
        target = self.run_dir / time.strftime("previous-%Y%m%d-%H%M%S")
        suffix = 1
        while target.exists():
            target = target.with_name(f"{target.name.split('.')[0]}.{suffix}")
            suffix += 1
        target.mkdir()
        for path in existing:
            shutil.move(str(path), target / path.name)
        logger.warning("resume: false: moved the previous run's files to %s", target)

    def _resume_from(self, checkpoint: Mapping[str, Any], state: RunState) -> None:
        self._warn_about_changed_settings(checkpoint.get("config") or {})
        self.load_learner_state(checkpoint)
        learner = self.learner
        if learner.scheduler is not None and checkpoint.get("scheduler") is not None:
            learner.scheduler.load_state_dict(checkpoint["scheduler"])
        state.progress = Progress(**checkpoint["progress"])
        state.guard = GuardState.from_state_dict(checkpoint["guard"])
        state.best = BestTracker.from_state_dict(checkpoint["early_stopping"], monitor=self.config.monitor,
                                                 mode=self.config.mode)
        state.history = list(checkpoint["history"])
        learner.lr.factor = state.guard.lr_factor
        learner.lr.apply(state.progress.global_step)
        rng = checkpoint["rng"]
        if rng["world_size"] == self.world_size:
            restore_rng_state(rng["per_rank"][self.rank])
        else:
            logger.warning("checkpoint written by %d rank(s), resuming on %d: RNG streams re-seeded, so the "
                           "resumed run will not match an uninterrupted one exactly", rng["world_size"], self.world_size)
            seed_everything(mix_seed(self.config.seed, self.rank, state.progress.global_step))
        if self.is_main:
            logger.info("resumed from %s: epoch %d, batch %d, step %d", self.files.last, state.progress.epoch,
                        state.progress.batch_in_epoch, state.progress.global_step)

    def _warn_about_changed_settings(self, saved: Mapping[str, Any]) -> None:
        current = self.config.to_dict()
        changed = [f"{key}: {saved.get(key)!r} -> {value!r}" for key, value in current.items()
                   if key not in RESUME_SAFE_FIELDS and key in saved and saved[key] != value]
        if changed:
            logger.warning("resuming with changed settings (the result will differ from an uninterrupted run): %s",
                           "; ".join(changed))

    def load_learner_state(self, checkpoint: Mapping[str, Any]) -> None:
        """Weights, optimizer, scaler and EMA from a checkpoint (not the scheduler: it is a pure
        function of the step, re-applied by the caller)."""
        learner = self.learner
        learner.model.load_state_dict(checkpoint["model"])
        learner.optimizer.load_state_dict(checkpoint["optimizer"])
        if learner.scaler is not None and checkpoint.get("scaler"):
            learner.scaler.load_state_dict(checkpoint["scaler"])
        if learner.ema is not None:
            if checkpoint.get("ema") is not None:
                # Older checkpoints also hold ema["generator"] (timm's private stochastic-rounding
                # RNG); it is ignored, see _warn_if_ema_resume_is_inexact.
                learner.ema.module.load_state_dict(checkpoint["ema"]["module"])
            else:
                logger.warning("the checkpoint has no EMA weights (trained with ema: false); EMA restarts from the weights")
                learner.ema.module.load_state_dict(learner.model.state_dict())

    # ------------------------------------------------------------------ rollback
    def rollback(self, state: RunState) -> None:
        """Restore weights, optimizer, scaler and EMA from the rollback checkpoint and lower the lr.

        The data position, RNG and counters move on: replaying the same batches would likely
        hit the same trouble, so the batches since the rollback point are simply not learnt from.
        The caller then writes last.pt (healthy=False) so the suspect state is replaced.
        """
        source = self.files.rollback_source()
        checkpoint = load_checkpoint(source, map_location=self.learner.device)
        self.load_learner_state(checkpoint)
        state.guard.record_rollback(
            step=state.progress.global_step, source=source,
            source_step=int(checkpoint["progress"]["global_step"]),
            rollback_lr_factor=self.config.rollback_lr_factor,
        )
        self.learner.lr.factor = state.guard.lr_factor
        self.learner.lr.apply(state.progress.global_step)

    # ------------------------------------------------------------------ writing
    def write(self, state: RunState, *, is_best: bool = False, stopped_reason: str | None = None,
              healthy: bool | None = None) -> Path | None:
        """Save the full training state as last.pt, gathering every rank's RNG state (a collective:
        all ranks call it). Returns the path on rank 0, None elsewhere.

        healthy: whether last.pt may become the rollback point; default: no bad step is pending.
        """
        rng_states = distributed.gather_objects(capture_rng_state())
        if not self.is_main:
            return None
        if healthy is None:
            healthy = state.guard.consecutive_bad_steps == 0
        path = self.files.write(self.checkpoint_dict(state, rng_states, stopped_reason), healthy=healthy,
                                is_best=is_best)
        logger.debug("checkpoint: %s (step %d%s)", path, state.progress.global_step, ", best" if is_best else "")
        return path

    def checkpoint_dict(self, state: RunState, rng_states: list[dict[str, Any]],
                        stopped_reason: str | None) -> dict[str, Any]:
        """The checkpoint dict; only tensors and plain Python values (torch.load(weights_only=True))."""
        learner, config = self.learner, self.config
        return {
            "format_version": CHECKPOINT_FORMAT_VERSION,
            "model": learner.model.state_dict(),
            "optimizer": learner.optimizer.state_dict(),
            "scheduler": learner.scheduler.state_dict() if learner.scheduler is not None else None,
            "scaler": learner.scaler.state_dict() if learner.scaler is not None else None,
            "ema": {"module": learner.ema.module.state_dict()} if learner.ema is not None else None,
            "rng": {"world_size": self.world_size, "per_rank": rng_states},
            "data_order": {
                "seed": config.seed,
                "epoch": 0 if config.overfit_batches else state.progress.epoch,
                "start_batch": state.progress.batch_in_epoch,
                "engine_sampler": self.engine_sampler,
            },
            "progress": asdict(state.progress),
            "guard": state.guard.state_dict(),
            "early_stopping": state.best.state_dict(),
            "history": [dict(entry) for entry in state.history],
            "config": config.to_dict(),
            "metadata": self.metadata,
            "stopped_reason": stopped_reason,
            "torch_version": str(torch.__version__),
            "saved_at": time.time(),
        }


def _warn_if_ema_resume_is_inexact(learner: Learner) -> None:
    """timm's ModelEmaV3 rounds bf16 EMA tensors stochastically with an RNG it keeps private; a
    checkpoint cannot save that RNG without reaching into timm internals, so say so when it is used.
    With fp32 weights (autocast does the low-precision math) the RNG is never drawn from."""
    if learner.ema is None:
        return
    if any(t.dtype == torch.bfloat16 for t in learner.ema.module.state_dict().values()):
        logger.warning("the EMA holds bf16 tensors, which timm updates with stochastic rounding from a private RNG "
                       "that checkpoints cannot save: a resumed run's EMA weights will differ slightly from an "
                       "uninterrupted run's. Keep the model in fp32 (amp casts inside autocast) for exact resume")
