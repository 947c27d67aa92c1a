"""Callbacks: how the outside world (MLflow, a notebook, a test) watches a training run.

Subclass `TrainingCallback` and override what you need; every hook is a no-op by default.
Only rank 0 calls callbacks. A callback that raises is logged and ignored, so a flaky tracking
server cannot kill a day-long run; test callbacks should therefore assert after `fit` returns.
To end a run on purpose, raise `StopTraining` (from on_step_end or on_epoch_end).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterable

from spectral_training.training import distributed
from spectral_training.training.config import TrainConfig
from spectral_training.training.state import FitResult

logger = logging.getLogger("spectral_training.training")


class StopTraining(Exception):
    """Raise from a callback hook to end the run gracefully: the engine writes a checkpoint and
    returns with stopped_reason "callback" (the message is logged)."""


class TrainingCallback:
    """Hooks called by `fit`, in this order: on_fit_start, (on_step_end..., on_checkpoint...,
    on_epoch_end)..., on_fit_end."""

    def on_fit_start(self, config: TrainConfig, state: dict[str, Any]) -> None:
        """Before the first step. `state` holds run_dir, device, resumed, start_epoch, start_step,
        batches_per_epoch, steps_per_epoch, world_size, amp, metadata."""

    def on_step_end(self, step: int, metrics: dict[str, float]) -> None:
        """After every optimizer step (1-based `step`, counting skipped ones). `metrics`:
        train_loss, lr, grad_norm, epoch, bad_step (0/1), failed_batches, loss_scale (fp16 only),
        and train_<part> for every entry of the model's "loss_parts"."""

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        """After validation and the epoch-end checkpoint. `metrics` is the epoch's history entry
        without None values (0-based `epoch`), val_<name> metrics of `fit(val_metrics=...)` included."""

    def on_checkpoint(self, path: Path, is_best: bool) -> None:
        """After a checkpoint was written to `path` (last.pt); `is_best` when best.pt was updated."""

    def on_fit_end(self, result: FitResult) -> None:
        """After the last checkpoint and the guard report, with the value `fit` returns."""


class CallbackList:
    """Dispatches hooks to callbacks on rank 0, logging (not raising) their errors."""

    def __init__(self, callbacks: Iterable[TrainingCallback]) -> None:
        self.callbacks = list(callbacks)

    def _call(self, hook: str, *args: Any) -> None:
        if not distributed.is_main_process():
            return
        for callback in self.callbacks:
            try:
                getattr(callback, hook)(*args)
            except StopTraining:
                raise
            except Exception:
                logger.exception("callback %s.%s raised; ignored", type(callback).__name__, hook)

    def on_fit_start(self, config: TrainConfig, state: dict[str, Any]) -> None:
        self._call("on_fit_start", config, state)

    def on_step_end(self, step: int, metrics: dict[str, float]) -> None:
        self._call("on_step_end", step, metrics)

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        self._call("on_epoch_end", epoch, metrics)

    def on_checkpoint(self, path: Path, is_best: bool) -> None:
        self._call("on_checkpoint", path, is_best)

    def on_fit_end(self, result: FitResult) -> None:
        self._call("on_fit_end", result)
