"""Where a training run stands: progress counters, the best-metric tracker, what `fit` returns.

Small data classes in the spirit of Lightning's `loops/progress.py`: each is saved in every
checkpoint (as plain dicts) and restored on resume. Nothing here runs a step or writes a file,
so callbacks and tracking code may import this module without pulling in the engine.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Protocol, runtime_checkable

from spectral_training.training.checkpoint import CheckpointFiles
from spectral_training.training.config import ConfigError
from spectral_training.training.guards import GuardState
from spectral_training.training.signals import exit_code_for_signal

logger = logging.getLogger("spectral_training.training")

# Reasons a run ends. Resuming a run that ended with one of TERMINAL_REASONS returns at once.
STOP_REASONS = ("completed", "early_stopping", "too_many_bad_steps", "signal", "max_steps", "callback")
TERMINAL_REASONS = ("early_stopping", "too_many_bad_steps")


@runtime_checkable
class EpochMetrics(Protocol):
    """Validation metrics of one pass, computed by the caller (e.g. a torchmetrics wrapper).

    `fit(..., val_metrics=factory)` calls `factory()` once per validation pass, then
    `update(output, batch)` for every validation batch that did not raise (the forward output
    and the batch, both on the training device), then `compute()` once. Each returned
    `{name: value}` lands in the epoch's history entry as `val_<name>`, where `monitor` can
    name it. Under DDP every rank sees only its share of the batches: `compute()` must return
    the value over all ranks (torchmetrics' `Metric.compute` syncs by itself).
    """

    def update(self, output: Mapping[str, Any], batch: Mapping[str, Any]) -> None: ...

    def compute(self) -> dict[str, float]: ...


@dataclass
class Progress:
    """Where the run is; saved in checkpoints under "progress"."""

    epoch: int = 0  # epoch in progress, 0-based (== completed epochs)
    batch_in_epoch: int = 0  # batches of this epoch already consumed
    global_step: int = 0  # optimizer steps attempted
    optimizer_updates: int = 0  # steps that really updated the weights
    # running sums of the epoch in progress, so a resumed epoch reports what an uninterrupted one would
    epoch_loss_sum: float = 0.0
    epoch_sample_count: float = 0.0
    epoch_part_sums: dict[str, float] = field(default_factory=dict)
    epoch_bad_steps: int = 0
    epoch_failed_batches: int = 0
    epoch_good_batches: int = 0
    epoch_seconds: float = 0.0

    def start_next_epoch(self) -> None:
        self.epoch += 1
        self.batch_in_epoch = 0
        self.epoch_loss_sum = self.epoch_sample_count = self.epoch_seconds = 0.0
        self.epoch_part_sums = {}
        self.epoch_bad_steps = self.epoch_failed_batches = self.epoch_good_batches = 0


@dataclass
class BestTracker:
    """Best value of the monitored history key, for best.pt and early stopping.

    Saved in checkpoints under "early_stopping". Checkpoints written before `monitor` existed
    hold only best_val_loss / best_epoch / epochs_without_improvement: that is this tracker with
    monitor "val_loss", mode "min" (see `from_state_dict`).
    """

    monitor: str = "val_loss"
    mode: str = "min"
    best_metric: float | None = None  # the monitored value at best_epoch
    best_val_loss: float | None = None  # the val loss at best_epoch (whatever is monitored)
    best_epoch: int | None = None
    epochs_without_improvement: int = 0

    def update(self, entry: Mapping[str, Any], min_delta: float) -> bool:
        """Record an epoch's history entry; True when its monitored value is a new best.

        An epoch without validation (val_loss None) is not counted. A NaN/Inf value counts as
        no improvement, as does an epoch whose every val batch raised. Raises ConfigError when a
        validated entry lacks the monitored key.
        """
        val_loss = entry.get("val_loss")
        if val_loss is None:
            return False
        if self.monitor not in entry and not math.isfinite(val_loss):
            # no batch could be validated (all raised), so the metrics were not computed either
            self.epochs_without_improvement += 1
            return False
        if self.monitor not in entry:
            available = sorted(key for key, value in entry.items()
                               if isinstance(value, (int, float)) and key != "epoch")
            raise ConfigError(
                f"training setting 'monitor' = '{self.monitor}' is not in the history entry of epoch "
                f"{entry.get('epoch')}; available keys: {', '.join(available)}. Set monitor to one of them, or pass "
                f"fit(..., val_metrics=...) whose compute() returns '{self.monitor.removeprefix('val_')}'"
            )
        value = entry[self.monitor]
        value = float(value) if isinstance(value, (int, float)) else float("nan")
        if math.isfinite(value) and (self.best_metric is None or self._beats(value, self.best_metric, min_delta)):
            self.best_metric, self.best_epoch = value, int(entry["epoch"])
            self.best_val_loss = val_loss
            self.epochs_without_improvement = 0
            return True
        self.epochs_without_improvement += 1
        return False

    def _beats(self, value: float, best: float, min_delta: float) -> bool:
        return value < best - min_delta if self.mode == "min" else value > best + min_delta

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any], *, monitor: str, mode: str) -> "BestTracker":
        """The tracker of a checkpoint, continued under the current `monitor` / `mode`.

        Both settings are resume-safe; when they differ from the checkpoint's (or the checkpoint
        predates them and tracked val loss), the stored best is in other units or the other
        direction, so tracking restarts at the resumed epoch: best.pt keeps the old best until
        the next validated epoch replaces it.
        """
        saved_monitor = state.get("monitor", "val_loss")
        saved_mode = state.get("mode", "min")
        if (saved_monitor, saved_mode) != (monitor, mode):
            logger.warning("resuming with monitor %s (%s) where the checkpoint tracked %s (%s): the best so far is "
                           "forgotten and the next validated epoch becomes best.pt", monitor, mode, saved_monitor,
                           saved_mode)
            return cls(monitor=monitor, mode=mode)
        best_val_loss = state.get("best_val_loss")
        # old checkpoints tracked val loss only, so their best metric is their best val loss
        best_metric = state.get("best_metric", best_val_loss)
        return cls(monitor=monitor, mode=mode, best_metric=best_metric, best_val_loss=best_val_loss,
                   best_epoch=state.get("best_epoch"),
                   epochs_without_improvement=int(state.get("epochs_without_improvement", 0)))


@dataclass
class RunState:
    """The bookkeeping a checkpoint saves beside the weights, and a resume or rollback restores."""

    progress: Progress = field(default_factory=Progress)
    guard: GuardState = field(default_factory=GuardState)
    best: BestTracker = field(default_factory=BestTracker)
    history: list[dict[str, Any]] = field(default_factory=list)

    def fit_result(self, reason: str, files: CheckpointFiles, *, failed_batches: list[dict[str, Any]] | None,
                   signal_number: int | None, resumed: bool) -> "FitResult":
        """The FitResult of a run that stopped for `reason` (failed_batches: every rank's records)."""
        return FitResult(
            best_val_loss=self.best.best_val_loss,
            best_epoch=self.best.best_epoch,
            epochs_run=self.progress.epoch,
            steps=self.progress.global_step,
            stopped_reason=reason,
            history=[dict(entry) for entry in self.history],
            last_checkpoint=files.last if files.last.exists() else None,
            best_checkpoint=files.best if files.best.exists() else None,
            skipped_sample_ids=self.guard.skipped_sample_ids(failed_batches),
            bad_steps=self.guard.total_bad_steps,
            rollbacks=self.guard.rollbacks,
            report_path=files.report if files.report.exists() else None,
            signal_number=signal_number,
            resumed=resumed,
            monitor=self.best.monitor,
            mode=self.best.mode,
            best_metric=self.best.best_metric,
        )


@dataclass
class FitResult:
    """What `fit` returns.

    monitor / mode: the history key that chose best.pt and drove early stopping, and whether
        lower ("min") or higher ("max") is better.
    best_metric / best_epoch: the monitored value at the best (0-based) epoch; None without validation.
    best_val_loss: the validation loss at that best epoch (the lowest one when monitor is val_loss).
    epochs_run: completed epochs, including those before a resume.
    steps: optimizer steps taken (global step), skipped ones included.
    stopped_reason: one of STOP_REASONS.
    history: one dict per completed epoch: epoch, train_loss, val_loss, lr, bad_steps,
        skipped_batches, seconds, steps, plus train_<part>/val_<part> per loss part,
        val_<name> per value of the `val_metrics` object and val_loss_ema when EMA is on.
    last_checkpoint / best_checkpoint: run_dir/last.pt and run_dir/best.pt (None if absent).
    skipped_sample_ids: ids of every batch that raised, on any rank (in order, no repeats).
    bad_steps / rollbacks: totals over the run; details in report_path (run_dir/guard_report.json).
    signal_number: the signal that stopped the run (stopped_reason "signal"), else None.
    resumed: True when this call continued from run_dir/last.pt.
    """

    best_val_loss: float | None
    best_epoch: int | None
    epochs_run: int
    steps: int
    stopped_reason: str
    history: list[dict[str, Any]]
    last_checkpoint: Path | None
    best_checkpoint: Path | None
    skipped_sample_ids: list[str]
    bad_steps: int = 0
    rollbacks: int = 0
    report_path: Path | None = None
    signal_number: int | None = None
    resumed: bool = False
    monitor: str = "val_loss"
    mode: str = "min"
    best_metric: float | None = None

    @property
    def exit_code(self) -> int:
        """Process exit code for a CLI wrapper: 0, or 128 + signal (SIGINT 130, SIGTERM 143)."""
        return exit_code_for_signal(self.signal_number) if self.stopped_reason == "signal" else 0
