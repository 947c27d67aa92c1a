"""The fit loop shared by every model family: epochs, validation, early stopping, callbacks.

    result = fit(model, train_loader, val_loader, TrainConfig.from_dict(params),
                 run_dir=Path("data/06_models/mae_run"), metadata={"bands": [...]})

What one step does is in `step.py`; checkpoints, resume and rollback in `run_state.py`; one
validation pass in `validation.py`; the run's counters and the best-metric tracker in `state.py`.
This module strings them together: for each epoch, train its remaining steps (guards,
rollbacks, periodic checkpoints, stop requests), validate, record the history entry, update
the best `monitor` value (best.pt) and decide whether to stop.
"""

from __future__ import annotations

import itertools
import logging
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

import torch
from torch import nn
from tqdm.auto import tqdm

from spectral_training.training import distributed
from spectral_training.training.callbacks import CallbackList, StopTraining, TrainingCallback
from spectral_training.training.checkpoint import to_checkpoint_safe
from spectral_training.training.config import ConfigError, TrainConfig
from spectral_training.training.data import engine_sampler
from spectral_training.training.device import resolve_device
from spectral_training.training.guards import TrainingError
from spectral_training.training.optim import steps_per_epoch
from spectral_training.training.rng import deterministic_algorithms, mix_seed
from spectral_training.training.run_state import RunCheckpoints
from spectral_training.training.signals import StopRequest
from spectral_training.training.state import STOP_REASONS, BestTracker, EpochMetrics, FitResult, RunState
from spectral_training.training.step import ForwardFn, TrainStep, WindowOutcome, build_learner, default_forward
from spectral_training.training.validation import ValidationResult, history_entry, validate

__all__ = ["STOP_REASONS", "FitResult", "default_forward", "fit"]

logger = logging.getLogger("spectral_training.training")

_VALIDATION_SEED_SALT = 99  # mixed with seed and rank: every validation pass draws the same numbers


def fit(
    model: nn.Module,
    train_loader: Iterable[Any],
    val_loader: Iterable[Any] | None,
    config: TrainConfig,
    *,
    run_dir: Path,
    metadata: Mapping[str, Any] | None = None,
    callbacks: Iterable[TrainingCallback] = (),
    forward_fn: ForwardFn | None = None,
    val_metrics: Callable[[], EpochMetrics] | None = None,
    device: torch.device | str | None = None,
) -> FitResult:
    """Train `model` and return a FitResult; checkpoints and the guard report go to `run_dir`.

    Args:
        model: any nn.Module; `forward_fn(model, batch)` (default: `model(batch["cube"])`) must
            return a dict with a scalar "loss" tensor and optionally "loss_parts" (dict of
            scalar tensors). The module is moved to `device` and trained in place; after `fit`
            it holds the *last* weights (load best.pt for the best ones).
        train_loader: batches of dicts {"cube": (B, C, H, W), "sample_id": [...], ...}. Build it
            with `make_loader(..., shuffle=True, seed=config.seed)` for a reproducible order and
            exact resume; any sized iterable works, with a warning.
        val_loader: same format, or None (no validation, no early stopping, no best.pt).
        config: the TrainConfig; `monitor` / `mode` choose best.pt and drive early stopping.
        run_dir: directory of last.pt, rollback.pt, best.pt and guard_report.json.
        metadata: plain data stored in every checkpoint (band stats, band list, model kwargs...);
            numpy arrays are converted to lists (see checkpoint.to_checkpoint_safe).
        callbacks: TrainingCallback instances, called on rank 0 only.
        forward_fn: `forward_fn(model, batch) -> dict` for families that need more than the cube
            (e.g. labels). The batch's tensors are already on the device.
        val_metrics: a factory of EpochMetrics (see state.EpochMetrics), called once per
            validation pass of the raw weights; its `compute()` values land in the history as
            val_<name>. Under DDP the object must sync across ranks in `compute()`.
        device: None = `config.device` (auto: cuda:LOCAL_RANK, then mps, then cpu; training/device.py).
    Returns:
        FitResult (see its docstring).
    Raises:
        ConfigError, ContractError, CheckpointError: bad settings (including a `monitor` that
            names no history key), model/batch contract broken, unusable checkpoint.
        TrainingError: every batch of an epoch (or max_consecutive_failed_batches in a row) raised.
    """
    trainer = _Trainer(
        model, train_loader, val_loader, config, run_dir=Path(run_dir), metadata=metadata, callbacks=callbacks,
        forward_fn=forward_fn or default_forward, val_metrics=val_metrics, device=device,
    )
    return trainer.run()


class _Trainer:
    """The epoch loop of one `fit` call; see `fit` for the contract."""

    def __init__(
        self,
        model: nn.Module,
        train_loader: Iterable[Any],
        val_loader: Iterable[Any] | None,
        config: TrainConfig,
        *,
        run_dir: Path,
        metadata: Mapping[str, Any] | None,
        callbacks: Iterable[TrainingCallback],
        forward_fn: ForwardFn,
        val_metrics: Callable[[], EpochMetrics] | None,
        device: torch.device | str | None,
    ) -> None:
        if not isinstance(config, TrainConfig):
            raise ConfigError(f"config must be a TrainConfig (use TrainConfig.from_dict), got {type(config).__name__}")
        if val_metrics is not None and not callable(val_metrics):
            raise ConfigError(f"val_metrics must be a factory (a class or function returning an EpochMetrics), got "
                              f"{type(val_metrics).__name__}; pass the class, not an instance")
        self.config = config
        self.run_dir = run_dir
        self.metadata = to_checkpoint_safe(dict(metadata or {}), "metadata")
        self.callbacks = CallbackList(callbacks)
        self.forward_fn = forward_fn
        self.val_metrics = val_metrics
        # Under torchrun (WORLD_SIZE > 1) join the process group here, so a script started by torchrun
        # needs no set-up of its own; a no-op in a plain run or when the group already exists.
        distributed.setup_distributed()
        device = resolve_device(device if device is not None else config.device)
        self.is_main = distributed.is_main_process()
        self.rank = distributed.rank()
        self.world_size = distributed.world_size()

        self.train_loader = train_loader
        self.val_loader = val_loader
        self.sampler = engine_sampler(train_loader)
        self.val_sampler = engine_sampler(val_loader)
        if self.sampler is None:
            logger.warning(
                "train_loader was not made by spectral_training.training.make_loader: the engine cannot fix its "
                "order, so a resumed run is not guaranteed to match an uninterrupted one, and a resumed epoch "
                "loads (and discards) the batches it already trained on"
            )
        try:
            full_epoch = len(train_loader)  # type: ignore[arg-type]
        except TypeError as error:
            raise ConfigError("train_loader must have a length (len(train_loader)); use make_loader") from error
        self.batches_per_epoch = min(full_epoch, config.overfit_batches) if config.overfit_batches else full_epoch
        if self.batches_per_epoch < 1:
            raise ConfigError("train_loader yields no batches (dataset smaller than one batch with drop_last?)")
        self.steps_per_epoch = steps_per_epoch(self.batches_per_epoch, config.accumulation_steps)

        self.learner = build_learner(model, config, device, self.steps_per_epoch)
        self.step = TrainStep(self.learner, forward_fn, config.clip_grad_norm)
        self.checkpoints = RunCheckpoints(run_dir, config, self.learner, self.metadata,
                                          engine_sampler=self.sampler is not None)
        self.state = RunState(best=BestTracker(monitor=config.monitor, mode=config.mode))
        self.resumed = False
        self.stop = StopRequest()
        self._clock = time.monotonic()

    # ================================================================== run
    def run(self) -> FitResult:
        with self.stop, deterministic_algorithms(self.config.deterministic):
            self.checkpoints.prepare()
            self.resumed, finished_reason = self.checkpoints.resume_or_start(self.state)
            if finished_reason is not None:
                self._info("%s: the run already ended (%s); nothing to do", self.run_dir, finished_reason)
                return self._result(finished_reason)
            self._info(
                "training on %s (%s), %d batch(es) = %d step(s) per epoch, epochs %d..%d, run_dir %s",
                self.learner.device, self.learner.amp.describe(), self.batches_per_epoch, self.steps_per_epoch,
                self.state.progress.epoch, self.config.epochs - 1, self.run_dir,
            )
            self._notify("on_fit_start", self.config, self._start_state())
            try:
                reason = self._loop()
            except TrainingError:
                self._write_report(stopped_reason="error", failed_batches=self._all_failed_batches())
                raise
            finally:
                self._reset_samplers()
            failed_batches = self._all_failed_batches()
            self._write_report(stopped_reason=reason, failed_batches=failed_batches)
            result = self._result(reason, failed_batches)
            self._info(
                "training stopped (%s) after %d epoch(s), %d step(s); best %s %s at epoch %s (val loss %s); "
                "%d bad step(s), %d rollback(s), %d skipped sample(s)",
                reason, result.epochs_run, result.steps, result.monitor, result.best_metric, result.best_epoch,
                result.best_val_loss, result.bad_steps, result.rollbacks, len(result.skipped_sample_ids),
            )
            self._notify("on_fit_end", result)
            return result

    def _loop(self) -> str:
        config, progress, best = self.config, self.state.progress, self.state.best
        if not self.resumed:
            self._write_checkpoint()  # step 0: a rollback point exists from the start
        while True:
            if progress.epoch >= config.epochs:
                return "completed"
            reason = self._train_epoch()
            if reason is not None:
                self._write_checkpoint(stopped_reason=reason)
                return reason
            improved = self._end_epoch()
            entry = self.state.history[-1]
            if config.patience is not None and best.epochs_without_improvement >= config.patience:
                reason = "early_stopping"
                self._info("early stopping: %s did not improve (mode %s) in %d epoch(s); best %s at epoch %s",
                           best.monitor, best.mode, config.patience, best.best_metric, best.best_epoch)
            elif progress.epoch >= config.epochs:
                reason = "completed"
            elif config.max_steps is not None and progress.global_step >= config.max_steps:
                reason = "max_steps"
            elif distributed.any_rank(self.stop.requested):
                reason = self._stop_reason()
            self._write_checkpoint(is_best=improved, stopped_reason=reason)
            self._notify("on_epoch_end", entry["epoch"], {k: v for k, v in entry.items() if v is not None})
            if reason is None and self.stop.requested and not distributed.is_distributed():
                reason = self._stop_reason()  # a callback raised StopTraining in on_epoch_end
            if reason is not None:
                return reason

    def _stop_reason(self) -> str:
        return "signal" if self.stop.signal_number is not None else "callback"

    # ================================================================== training
    def _train_epoch(self) -> str | None:
        """Train the rest of the current epoch; returns a stop reason, or None when the epoch's
        batches are all done (validation follows)."""
        config, progress, guard = self.config, self.state.progress, self.state.guard
        self._clock = time.monotonic()
        self.learner.train_module.train()
        batches = self._epoch_batches(progress.epoch, progress.batch_in_epoch)
        show_bar = config.progress and self.is_main and sys.stderr.isatty()
        with tqdm(total=self.batches_per_epoch, initial=progress.batch_in_epoch, desc=f"epoch {progress.epoch}",
                  disable=not show_bar, leave=False, dynamic_ncols=True) as bar:
            while progress.batch_in_epoch < self.batches_per_epoch:
                window = min(config.accumulation_steps, self.batches_per_epoch - progress.batch_in_epoch)
                lr_used = self.learner.lr.current_lr()
                outcome, consumed, stop_seen = self.step.run(batches, window, progress, guard, self.stop)
                if consumed == 0:  # loader shorter than len() said
                    logger.warning("epoch %d: the loader ended after %d of %d batches",
                                   progress.epoch, progress.batch_in_epoch, self.batches_per_epoch)
                    break
                progress.batch_in_epoch += consumed
                progress.global_step += 1
                self.learner.lr.apply(progress.global_step)
                bar.update(consumed)
                self._after_step(outcome, lr_used, bar)

                if guard.consecutive_failed_batches >= config.max_consecutive_failed_batches:
                    raise TrainingError(self._failed_batches_message(
                        f"{guard.consecutive_failed_batches} batches in a row raised"))
                if guard.needs_rollback(config.max_bad_steps):
                    if guard.rollbacks_exhausted(config.max_rollbacks):
                        logger.error("step %d: %d bad steps in a row after %d rollback(s); stopping (see %s)",
                                     progress.global_step, guard.consecutive_bad_steps, guard.rollbacks,
                                     self.checkpoints.files.report)
                        return "too_many_bad_steps"
                    self.checkpoints.rollback(self.state)
                    # Replace the suspect last.pt by the restored state, keeping rollback.pt as it is.
                    self._write_checkpoint(healthy=False)
                if stop_seen or (not distributed.is_distributed() and self.stop.requested):
                    return self._stop_reason()
                more_batches = progress.batch_in_epoch < self.batches_per_epoch
                if config.max_steps is not None and progress.global_step >= config.max_steps and more_batches:
                    return "max_steps"
                every = config.checkpoint_every_steps
                if every and progress.global_step % every == 0 and more_batches:
                    self._write_checkpoint()
        if progress.epoch_good_batches == 0 and progress.epoch_failed_batches > 0:
            raise TrainingError(self._failed_batches_message(f"every batch of epoch {progress.epoch} raised"))
        return None

    def _failed_batches_message(self, what: str) -> str:
        guard = self.state.guard
        last = guard.failed_batches[-1] if guard.failed_batches else {}
        return (
            f"{what}; last error: {last.get('error', '?')} (samples {last.get('sample_ids', [])[:8]}). "
            f"This is not a bad sample or two but a systematic failure (model/transform mismatch?); "
            f"see {self.checkpoints.files.report}"
        )

    def _epoch_batches(self, epoch: int, start_batch: int) -> Iterator[Any]:
        """Iterator over the batches of `epoch` from `start_batch` on (overfit: the first N batches
        of epoch 0's order, every epoch)."""
        order_epoch = 0 if self.config.overfit_batches else epoch
        limit = self.config.overfit_batches or None
        if self.sampler is not None:
            self.sampler.set_epoch(order_epoch, start_batch=start_batch, batch_limit=limit)
            return iter(self.train_loader)
        inner_sampler = getattr(self.train_loader, "sampler", None)
        if hasattr(inner_sampler, "set_epoch"):  # e.g. a DistributedSampler
            inner_sampler.set_epoch(order_epoch)
        iterator: Iterator[Any] = iter(self.train_loader)
        if limit is not None:
            iterator = itertools.islice(iterator, limit)
        if start_batch:
            logger.warning("resuming epoch %d at batch %d by loading and discarding the batches before it",
                           epoch, start_batch)
            for _ in range(start_batch):
                next(iterator, None)
        return iterator

    def _after_step(self, outcome: WindowOutcome, lr_used: float, bar: Any) -> None:
        """Log the step, update the bar and call on_step_end."""
        progress = self.state.progress
        scaler = self.learner.scaler
        metrics = outcome.metrics(lr=lr_used, epoch=progress.epoch,
                                  loss_scale=float(scaler.get_scale()) if scaler is not None else None)
        if progress.global_step % self.config.log_every_steps == 0 and self.is_main:
            logger.info("epoch %d step %d batch %d/%d: loss %.6g lr %.3g grad_norm %.3g",
                        progress.epoch, progress.global_step, progress.batch_in_epoch, self.batches_per_epoch,
                        outcome.loss, lr_used, outcome.grad_norm)
        if outcome.kind == "ok":
            bar.set_postfix(loss=f"{outcome.loss:.4g}", lr=f"{lr_used:.2e}", refresh=False)
        self._notify("on_step_end", progress.global_step, metrics)

    # ================================================================== epoch end
    def _end_epoch(self) -> bool:
        """Validate, append the epoch's history entry, advance the epoch; True if the monitored
        value improved (best.pt is then this epoch)."""
        progress, best, learner = self.state.progress, self.state.best, self.learner
        val = self._validate(learner.model, self.val_metrics)
        val_loss_ema = None
        if learner.ema is not None and self._validation_loader() is not None:
            val_loss_ema = self._validate(learner.ema.module, None).loss  # loss only, as documented
        self._tick()
        entry = history_entry(progress, val, lr=learner.lr.current_lr(), val_loss_ema=val_loss_ema)
        self.state.history.append(entry)
        improved = best.update(entry, self.config.min_delta)
        watched = "" if best.monitor == "val_loss" else f" {best.monitor} {_number(entry.get(best.monitor))}"
        self._info(
            "epoch %d: train_loss %.6g val_loss %s%s lr %.3g bad_steps %d skipped_batches %d (%.1fs)%s",
            progress.epoch, entry["train_loss"], _number(val.loss), watched, entry["lr"], entry["bad_steps"],
            entry["skipped_batches"], entry["seconds"], f" *best {best.monitor}*" if improved else "",
        )
        progress.start_next_epoch()
        return improved

    def _validation_loader(self) -> Iterable[Any] | None:
        return self.train_loader if self.config.overfit_batches else self.val_loader

    def _validate(self, module: nn.Module, metrics_factory: Callable[[], EpochMetrics] | None) -> ValidationResult:
        overfit = bool(self.config.overfit_batches)
        return validate(
            module, self._validation_loader(), forward_fn=self.forward_fn, amp=self.learner.amp,
            device=self.learner.device, seed=mix_seed(self.config.seed, self.rank, _VALIDATION_SEED_SALT),
            sampler=self.sampler if overfit else self.val_sampler, limit=self.config.overfit_batches or None,
            metrics_factory=metrics_factory,
        )

    # ================================================================== checkpoints and report
    def _write_checkpoint(self, *, is_best: bool = False, stopped_reason: str | None = None,
                          healthy: bool | None = None) -> None:
        self._tick()
        path = self.checkpoints.write(self.state, is_best=is_best, stopped_reason=stopped_reason, healthy=healthy)
        if path is not None:
            self._notify("on_checkpoint", path, is_best)

    def _all_failed_batches(self) -> list[dict[str, Any]]:
        """Failed-batch records of every rank (a collective under DDP: all ranks must call it)."""
        per_rank = distributed.gather_objects(self.state.guard.failed_batches)
        return [record for records in per_rank for record in records]

    def _write_report(self, *, stopped_reason: str | None, failed_batches: list[dict[str, Any]]) -> None:
        if self.is_main:
            self.state.guard.write_report(self.checkpoints.files.report, stopped_reason=stopped_reason,
                                          config=self.config.to_dict(), failed_batches=failed_batches)

    # ================================================================== helpers
    def _tick(self) -> None:
        """Add the time since the last tick to the epoch's seconds."""
        now = time.monotonic()
        self.state.progress.epoch_seconds += now - self._clock
        self._clock = now

    def _info(self, message: str, *args: Any) -> None:
        """Log at INFO on rank 0 only (every rank would say the same)."""
        if self.is_main:
            logger.info(message, *args)

    def _notify(self, hook: str, *args: Any) -> None:
        try:
            getattr(self.callbacks, hook)(*args)
        except StopTraining as request:
            logger.warning("a callback asked to stop training (%s): %s", hook, request)
            self.stop.request(None)

    def _reset_samplers(self) -> None:
        for sampler in (self.sampler, self.val_sampler):
            if sampler is not None:
                sampler.set_epoch(0)

    def _start_state(self) -> dict[str, Any]:
        return {
            "run_dir": self.run_dir,
            "device": str(self.learner.device),
            "amp": self.learner.amp.describe(),
            "resumed": self.resumed,
            "start_epoch": self.state.progress.epoch,
            "start_step": self.state.progress.global_step,
            "batches_per_epoch": self.batches_per_epoch,
            "steps_per_epoch": self.steps_per_epoch,
            "world_size": self.world_size,
            "metadata": self.metadata,
        }

    def _result(self, reason: str, failed_batches: list[dict[str, Any]] | None = None) -> FitResult:
        return self.state.fit_result(reason, self.checkpoints.files, failed_batches=failed_batches,
                                     signal_number=self.stop.signal_number, resumed=self.resumed)


def _number(value: Any) -> str:
    return "n/a" if value is None else f"{value:.6g}" if isinstance(value, (int, float)) else str(value)
