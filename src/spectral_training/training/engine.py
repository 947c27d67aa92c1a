"""The fit loop shared by every model family.

    result = fit(model, train_loader, val_loader, TrainConfig.from_dict(params),
                 run_dir=Path("data/06_models/mae_run"), metadata={"bands": [...]})

What one step does (a step = one window of `accumulation_steps` batches):

    for each batch of the window:
        forward under autocast -> output["loss"] cast to fp32 -> (scaled) backward
        (a batch that raises is recorded and dooms the window; the rest of the window is
         consumed from the loader but not computed)
    unscale (fp16) -> gradient norm -> NaN/Inf guard -> clip -> optimizer step -> EMA update
    zero grads; lr for the next step from the schedule x rollback factor

Exact resume: the engine owns the data order (see `data.make_loader`), checkpoints at step
granularity with every RNG state, and a resumed run restarts the interrupted epoch at the next
batch without loading the ones already done. On CPU a run killed at any point and resumed ends
with bit-identical weights to a run never interrupted.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from spectral_training.training import distributed
from spectral_training.training.amp import resolve_amp
from spectral_training.training.callbacks import CallbackList, StopTraining, TrainingCallback
from spectral_training.training.checkpoint import (
    CHECKPOINT_FORMAT_VERSION,
    CheckpointError,
    CheckpointFiles,
    load_checkpoint,
    remove_stale_temp_files,
    to_checkpoint_safe,
)
from spectral_training.training.config import RESUME_SAFE_FIELDS, ConfigError, TrainConfig
from spectral_training.training.data import batch_sample_ids, batch_size_of, engine_sampler
from spectral_training.training.guards import ContractError, GuardState, TrainingError
from spectral_training.training.optim import (
    LearningRateControl,
    build_ema,
    build_optimizer,
    build_scheduler,
    steps_per_epoch,
)
from spectral_training.training.rng import (
    capture_rng_state,
    deterministic_algorithms,
    isolated_rng,
    mix_seed,
    restore_rng_state,
    seed_everything,
)
from spectral_training.training.signals import StopRequest, exit_code_for_signal

logger = logging.getLogger("spectral_training.training")

ForwardFn = Callable[[nn.Module, Any], Mapping[str, Any]]

# Reasons a run ends. Resuming a run that ended with one of TERMINAL_REASONS returns at once.
STOP_REASONS = ("completed", "early_stopping", "too_many_bad_steps", "signal", "max_steps", "callback")
TERMINAL_REASONS = ("early_stopping", "too_many_bad_steps")


@dataclass
class FitResult:
    """What `fit` returns.

    best_val_loss / best_epoch: lowest validation loss and its (0-based) epoch; None without validation.
    epochs_run: completed epochs, including those before a resume.
    steps: optimizer steps taken (global step), skipped ones included.
    stopped_reason: one of STOP_REASONS.
    history: one dict per completed epoch: epoch, train_loss, val_loss, lr, bad_steps,
        skipped_batches, seconds, steps, plus train_<part>/val_<part> per loss part and
        val_loss_ema when EMA is on.
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

    @property
    def exit_code(self) -> int:
        """Process exit code for a CLI wrapper: 0, or 128 + signal (SIGINT 130, SIGTERM 143)."""
        return exit_code_for_signal(self.signal_number) if self.stopped_reason == "signal" else 0


@dataclass
class _Progress:
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
class _EarlyStopping:
    best_val_loss: float | None = None
    best_epoch: int | None = None
    epochs_without_improvement: int = 0

    def update(self, val_loss: float | None, epoch: int, min_delta: float) -> bool:
        """Record an epoch's val loss; True when it is a new best."""
        if val_loss is None:
            return False
        if math.isfinite(val_loss) and (self.best_val_loss is None or val_loss < self.best_val_loss - min_delta):
            self.best_val_loss, self.best_epoch = val_loss, epoch
            self.epochs_without_improvement = 0
            return True
        self.epochs_without_improvement += 1
        return False


@dataclass
class _WindowOutcome:
    kind: str  # "ok", "bad" (NaN/Inf, skipped), "overflow" (fp16 scaler skipped), "failed" (a batch raised)
    loss: float
    grad_norm: float
    sample_ids: list[str]
    failed_batches: int
    parts: dict[str, float]


def default_forward(model: nn.Module, batch: Any) -> Mapping[str, Any]:
    """model(batch["cube"]): the contract for families that need no labels."""
    if not isinstance(batch, Mapping) or "cube" not in batch:
        raise ContractError(
            f"batches must be dicts with a 'cube' tensor, got {type(batch).__name__}"
            + (f" with keys {sorted(batch)}" if isinstance(batch, Mapping) else "")
            + "; pass forward_fn=... to fit for another layout"
        )
    return model(batch["cube"])


def move_to_device(batch: Any, device: torch.device) -> Any:
    """Tensors of a (nested) batch moved to `device`; other values untouched."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {key: move_to_device(value, device) for key, value in batch.items()}
    if isinstance(batch, (list, tuple)) and any(isinstance(v, torch.Tensor) for v in batch):
        return type(batch)(move_to_device(v, device) for v in batch)
    return batch


def _loss_from_output(output: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Check the model contract; returns the fp32 loss and the detached fp32 loss parts."""
    if not isinstance(output, Mapping) or "loss" not in output:
        raise ContractError(
            f"the model (or forward_fn) must return a dict with a 'loss' tensor, got {type(output).__name__}"
            + (f" with keys {sorted(output)}" if isinstance(output, Mapping) else "")
        )
    loss = output["loss"]
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise ContractError(f"output['loss'] must be a scalar tensor, got {shape}; reduce it (e.g. .mean())")
    parts = {}
    for name, value in (output.get("loss_parts") or {}).items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            parts[str(name)] = value.detach().float().reshape(())
        elif isinstance(value, (int, float)):
            parts[str(name)] = torch.tensor(float(value), device=loss.device)
    # The loss is reduced in fp32 whatever autocast did inside the model.
    return loss.float().reshape(()), parts


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
        config: the TrainConfig.
        run_dir: directory of last.pt, rollback.pt, best.pt and guard_report.json.
        metadata: plain data stored in every checkpoint (band stats, band list, model kwargs...);
            numpy arrays are converted to lists (see checkpoint.to_checkpoint_safe).
        callbacks: TrainingCallback instances, called on rank 0 only.
        forward_fn: `forward_fn(model, batch) -> dict` for families that need more than the cube
            (e.g. labels). The batch's tensors are already on the device.
        device: None = cuda:LOCAL_RANK when available, else cpu.
    Returns:
        FitResult (see its docstring).
    Raises:
        ConfigError, ContractError, CheckpointError: bad settings, model/batch contract broken,
            unusable checkpoint.
        TrainingError: every batch of an epoch (or max_consecutive_failed_batches in a row) raised.
    """
    trainer = _Trainer(
        model, train_loader, val_loader, config,
        run_dir=Path(run_dir), metadata=metadata, callbacks=callbacks, forward_fn=forward_fn, device=device,
    )
    return trainer.run()


class _Trainer:
    """State and steps of one `fit` call; see `fit` for the contract."""

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
        forward_fn: ForwardFn | None,
        device: torch.device | str | None,
    ) -> None:
        if not isinstance(config, TrainConfig):
            raise ConfigError(f"config must be a TrainConfig (use TrainConfig.from_dict), got {type(config).__name__}")
        self.config = config
        self.run_dir = run_dir
        self.files = CheckpointFiles(run_dir)
        self.metadata = to_checkpoint_safe(dict(metadata or {}), "metadata")
        self.callbacks = CallbackList(callbacks)
        self.forward_fn = forward_fn or default_forward
        self.device = torch.device(device) if device is not None else distributed.default_device()
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

        self.model = model.to(self.device)
        self.amp = resolve_amp(config.amp, self.device)
        self.scaler = self.amp.make_grad_scaler()
        self.optimizer = build_optimizer(self.model, config)
        self.scheduler = build_scheduler(self.optimizer, config, self.steps_per_epoch)
        self.lr = LearningRateControl(self.optimizer, self.scheduler)
        self.ema = build_ema(self.model, config)
        self.parameters = [p for p in self.model.parameters() if p.requires_grad]
        if distributed.is_distributed():
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_module: nn.Module = DistributedDataParallel(
                self.model, device_ids=device_ids, find_unused_parameters=config.find_unused_parameters
            )
        else:
            self.train_module = self.model

        self.progress = _Progress()
        self.guard = GuardState()
        self.early = _EarlyStopping()
        self.history: list[dict[str, Any]] = []
        self.resumed = False
        self.stop = StopRequest()
        self._clock = time.monotonic()

    # ================================================================== run
    def run(self) -> FitResult:
        with self.stop, deterministic_algorithms(self.config.deterministic):
            if self.is_main:
                self.run_dir.mkdir(parents=True, exist_ok=True)
                remove_stale_temp_files(self.run_dir)
            distributed.barrier()
            finished_reason = self._resume_or_start()
            if finished_reason is not None:
                self._info("%s: the run already ended (%s); nothing to do", self.run_dir, finished_reason)
                return self._result(finished_reason)
            self._info(
                "training on %s (%s), %d batch(es) = %d step(s) per epoch, epochs %d..%d, run_dir %s",
                self.device, self.amp.describe(), self.batches_per_epoch, self.steps_per_epoch,
                self.progress.epoch, self.config.epochs - 1, self.run_dir,
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
                "training stopped (%s) after %d epoch(s), %d step(s); best val loss %s; %d bad step(s), "
                "%d rollback(s), %d skipped sample(s)",
                reason, result.epochs_run, result.steps, result.best_val_loss, result.bad_steps,
                result.rollbacks, len(result.skipped_sample_ids),
            )
            self._notify("on_fit_end", result)
            return result

    def _loop(self) -> str:
        config, progress = self.config, self.progress
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
            entry = self.history[-1]
            if config.patience is not None and self.early.epochs_without_improvement >= config.patience:
                reason = "early_stopping"
                self._info("early stopping: no val loss improvement in %d epoch(s); best %.6g at epoch %s",
                            config.patience, self.early.best_val_loss, self.early.best_epoch)
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

    # ================================================================== epochs
    def _train_epoch(self) -> str | None:
        """Train the rest of the current epoch; returns a stop reason, or None when the epoch's
        batches are all done (validation follows)."""
        config, progress, guard = self.config, self.progress, self.guard
        self._clock = time.monotonic()
        self.train_module.train()
        batches = self._epoch_batches(progress.epoch, progress.batch_in_epoch)
        show_bar = config.progress and self.is_main and sys.stderr.isatty()
        with tqdm(total=self.batches_per_epoch, initial=progress.batch_in_epoch, desc=f"epoch {progress.epoch}",
                  disable=not show_bar, leave=False, dynamic_ncols=True) as bar:
            while progress.batch_in_epoch < self.batches_per_epoch:
                window = min(config.accumulation_steps, self.batches_per_epoch - progress.batch_in_epoch)
                lr_used = self.lr.current_lr()
                outcome, consumed, stop_seen = self._train_window(batches, window)
                if consumed == 0:  # loader shorter than len() said
                    logger.warning("epoch %d: the loader ended after %d of %d batches",
                                   progress.epoch, progress.batch_in_epoch, self.batches_per_epoch)
                    break
                progress.batch_in_epoch += consumed
                progress.global_step += 1
                self.lr.apply(progress.global_step)
                bar.update(consumed)
                self._after_step(outcome, lr_used, bar)

                if guard.consecutive_failed_batches >= config.max_consecutive_failed_batches:
                    raise TrainingError(self._failed_batches_message(
                        f"{guard.consecutive_failed_batches} batches in a row raised"))
                if guard.needs_rollback(config.max_bad_steps):
                    if guard.rollbacks_exhausted(config.max_rollbacks):
                        logger.error("step %d: %d bad steps in a row after %d rollback(s); stopping (see %s)",
                                     progress.global_step, guard.consecutive_bad_steps, guard.rollbacks,
                                     self.files.report)
                        return "too_many_bad_steps"
                    self._rollback()
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
        last = self.guard.failed_batches[-1] if self.guard.failed_batches else {}
        return (
            f"{what}; last error: {last.get('error', '?')} (samples {last.get('sample_ids', [])[:8]}). "
            f"This is not a bad sample or two but a systematic failure (model/transform mismatch?); "
            f"see {self.files.report}"
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

    def _end_epoch(self) -> bool:
        """Validate, append the epoch's history entry, advance the epoch; True if val loss improved."""
        progress = self.progress
        val_loss, val_parts, val_failed = self._validate(self.model)
        entry: dict[str, Any] = {
            "epoch": progress.epoch,
            "train_loss": (progress.epoch_loss_sum / progress.epoch_sample_count
                           if progress.epoch_sample_count else float("nan")),
            "val_loss": val_loss,
            "lr": self.lr.current_lr(),
            "bad_steps": progress.epoch_bad_steps,
            "skipped_batches": progress.epoch_failed_batches,
            "seconds": 0.0,
            "steps": progress.global_step,
        }
        if self.ema is not None and self._validation_loader() is not None:
            entry["val_loss_ema"] = self._validate(self.ema.module)[0]
        if val_failed:
            entry["val_skipped_batches"] = val_failed
        for name, total in sorted(progress.epoch_part_sums.items()):
            entry[f"train_{name}"] = total / progress.epoch_sample_count if progress.epoch_sample_count else float("nan")
        for name, value in sorted(val_parts.items()):
            entry[f"val_{name}"] = value
        self._tick()
        entry["seconds"] = progress.epoch_seconds
        self.history.append(entry)
        improved = self.early.update(val_loss, progress.epoch, self.config.min_delta)
        self._info(
            "epoch %d: train_loss %.6g val_loss %s lr %.3g bad_steps %d skipped_batches %d (%.1fs)%s",
            progress.epoch, entry["train_loss"], "n/a" if val_loss is None else f"{val_loss:.6g}", entry["lr"],
            entry["bad_steps"], entry["skipped_batches"], entry["seconds"], " *best*" if improved else "",
        )
        progress.start_next_epoch()
        return improved

    def _validation_loader(self) -> Iterable[Any] | None:
        return self.train_loader if self.config.overfit_batches else self.val_loader

    @torch.no_grad()
    def _validate(self, module: nn.Module) -> tuple[float | None, dict[str, float], int]:
        """Mean val loss (weighted by batch size) and loss parts over all ranks, plus the number
        of val batches that raised (skipped). Runs on the unwrapped module (no DDP collectives,
        so ranks may hold different batch counts) with RNGs seeded alike every epoch."""
        loader = self._validation_loader()
        if loader is None:
            return None, {}, 0
        limit = self.config.overfit_batches or None
        sampler = self.sampler if self.config.overfit_batches else self.val_sampler
        if sampler is not None:
            sampler.set_epoch(0, batch_limit=limit)
        was_training = module.training
        module.eval()
        loss_sum, count, failed = 0.0, 0.0, 0
        part_sums: dict[str, float] = {}
        try:
            with isolated_rng(mix_seed(self.config.seed, self.rank, 99)):
                batches = iter(loader)
                if limit is not None and sampler is None:
                    batches = itertools.islice(batches, limit)
                for batch in batches:
                    try:
                        batch = move_to_device(batch, self.device)
                        with self.amp.autocast():
                            loss, parts = _loss_from_output(self.forward_fn(module, batch))
                    except ContractError:
                        raise
                    except Exception as error:
                        failed += 1
                        logger.warning("validation batch raised %s: %s; skipped; samples: %s",
                                       type(error).__name__, error, batch_sample_ids(batch)[:16])
                        continue
                    size = batch_size_of(batch)
                    loss_sum += float(loss) * size
                    count += size
                    for name, value in parts.items():
                        part_sums[name] = part_sums.get(name, 0.0) + float(value) * size
        finally:
            module.train(was_training)
        names = sorted(part_sums)
        totals = distributed.all_reduce_sum([loss_sum, count, float(failed)] + [part_sums[n] for n in names])
        loss_sum, count, failed = totals[0], totals[1], int(totals[2])
        if count == 0:
            return float("nan"), {}, failed
        return loss_sum / count, {n: totals[3 + i] / count for i, n in enumerate(names)}, failed

    # ================================================================== one step
    def _train_window(self, batches: Iterator[Any], window: int) -> tuple[_WindowOutcome, int, bool]:
        """Run one accumulation window; returns (outcome, batches consumed, stop flag of any rank)."""
        progress, guard = self.progress, self.guard
        is_ddp = isinstance(self.train_module, DistributedDataParallel)
        loss_sum = torch.zeros((), device=self.device)
        sample_count = 0.0
        part_sums: dict[str, torch.Tensor] = {}
        window_ids: list[str] = []
        failed_batches = 0
        doomed = False
        consumed = 0
        for index in range(window):
            batch = next(batches, None)
            if batch is None:
                break
            consumed += 1
            ids = batch_sample_ids(batch)
            window_ids.extend(ids)
            if doomed:  # the window is skipped anyway: keep the data order, spare the compute
                continue
            # DDP syncs gradients only on the window's last backward.
            sync = self.train_module.no_sync() if is_ddp and index < window - 1 else contextlib.nullcontext()
            error: BaseException | None = None
            with sync:
                try:
                    batch = move_to_device(batch, self.device)
                    with self.amp.autocast():
                        output = self.forward_fn(self.train_module, batch)
                    loss, parts = _loss_from_output(output)
                except ContractError:
                    raise
                except Exception as caught:
                    error = caught
                # Ranks must agree before backward, or the healthy ones would wait forever in
                # DDP's gradient all-reduce for the rank that skipped.
                if distributed.any_rank(error is not None) if is_ddp else error is not None:
                    # every rank counts it (error=None where this rank's batch was fine)
                    self._record_failed_batch(ids, progress.batch_in_epoch + index, error)
                    failed_batches += 1
                    doomed = True
                    continue
                try:
                    scaled = loss / window
                    (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
                except Exception as caught:  # cannot be synced across ranks; rare (e.g. OOM in backward)
                    self._record_failed_batch(ids, progress.batch_in_epoch + index, caught)
                    failed_batches += 1
                    doomed = True
                    continue
            size = float(batch_size_of(batch))
            loss_sum += loss.detach() * size
            sample_count += size
            for name, value in parts.items():
                part_sums[name] = part_sums.get(name, torch.zeros((), device=self.device)) + value * size
            guard.record_successful_batch()
            progress.epoch_good_batches += 1

        if consumed == 0:
            return _WindowOutcome("failed", float("nan"), float("nan"), [], 0, {}), 0, False
        if doomed:
            self.optimizer.zero_grad(set_to_none=True)
            stop_seen = distributed.any_rank(self.stop.requested) if is_ddp else self.stop.requested
            return _WindowOutcome("failed", float("nan"), float("nan"), window_ids, failed_batches, {}), consumed, stop_seen

        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        grads = [p.grad for p in self.parameters if p.grad is not None]
        grad_norm = (torch.nn.utils.get_total_norm(grads, 2.0, error_if_nonfinite=False)
                     if grads else torch.zeros((), device=self.device))
        names = sorted(part_sums)
        # One host sync per step: loss, its finiteness, grad norm and loss parts in one transfer.
        local = torch.stack(
            [loss_sum.float(), (~torch.isfinite(loss_sum)).float(), grad_norm.float().to(loss_sum.device)]
            + [part_sums[n].float() for n in names]
        ).tolist()
        loss_total, nonfinite_loss, grad_norm_value = local[0], local[1], local[2]
        part_totals = local[3:]
        stop_seen = self.stop.requested
        if is_ddp:  # grads are already all-reduced, so grad_norm agrees across ranks
            reduced = distributed.all_reduce_sum(
                [loss_total, sample_count, nonfinite_loss, float(self.stop.requested)] + part_totals)
            loss_total, sample_count, nonfinite_loss, stop_seen = reduced[0], reduced[1], reduced[2], reduced[3] > 0
            part_totals = reduced[4:]
        mean_loss = loss_total / sample_count if sample_count else float("nan")
        parts_mean = {n: part_totals[i] / sample_count for i, n in enumerate(names)} if sample_count else {}
        loss_ok = nonfinite_loss == 0 and math.isfinite(mean_loss)
        grad_ok = math.isfinite(grad_norm_value)

        if not loss_ok or (not grad_ok and self.scaler is None):
            if self.scaler is not None:
                self.scaler.update()  # unscale_ was called; update() closes the iteration
            guard.record_bad_step(
                step=progress.global_step + 1, epoch=progress.epoch, batch_in_epoch=progress.batch_in_epoch,
                sample_ids=window_ids, loss=mean_loss, grad_norm=grad_norm_value,
            )
            progress.epoch_bad_steps += 1
            kind = "bad"
        elif not grad_ok:
            # fp16 overflow: the GradScaler skips this update and lowers its scale; that is its
            # normal way of finding the scale, not a sign of divergence.
            self.scaler.step(self.optimizer)  # type: ignore[union-attr]
            self.scaler.update()  # type: ignore[union-attr]
            logger.debug("step %d: fp16 gradient overflow; GradScaler skipped the update", progress.global_step + 1)
            kind = "overflow"
        else:
            if self.config.clip_grad_norm is not None:
                torch.nn.utils.clip_grads_with_norm_(self.parameters, self.config.clip_grad_norm, grad_norm)
            if self.scaler is not None:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
            progress.optimizer_updates += 1
            if self.ema is not None:
                self.ema.update(self.model, step=progress.optimizer_updates)
            guard.record_good_step()
            kind = "ok"
        if kind != "bad":
            progress.epoch_loss_sum += loss_total
            progress.epoch_sample_count += sample_count
            for i, name in enumerate(names):
                progress.epoch_part_sums[name] = progress.epoch_part_sums.get(name, 0.0) + part_totals[i]
        self.optimizer.zero_grad(set_to_none=True)
        return _WindowOutcome(kind, mean_loss, grad_norm_value, window_ids, failed_batches, parts_mean), consumed, stop_seen

    def _record_failed_batch(self, sample_ids: list[str], batch_in_epoch: int, error: BaseException | None) -> None:
        self.guard.record_failed_batch(
            step=self.progress.global_step + 1, epoch=self.progress.epoch, batch_in_epoch=batch_in_epoch,
            sample_ids=sample_ids, error=error,
        )
        self.progress.epoch_failed_batches += 1

    def _after_step(self, outcome: _WindowOutcome, lr_used: float, bar: Any) -> None:
        """Log the step, update the bar and call on_step_end."""
        progress = self.progress
        metrics: dict[str, float] = {
            "train_loss": outcome.loss,
            "lr": lr_used,
            "grad_norm": outcome.grad_norm,
            "epoch": float(progress.epoch),
            "bad_step": 1.0 if outcome.kind == "bad" else 0.0,
            "failed_batches": float(outcome.failed_batches),
        }
        if self.scaler is not None:
            metrics["loss_scale"] = float(self.scaler.get_scale())
        for name, value in outcome.parts.items():
            metrics[f"train_{name}"] = value
        if progress.global_step % self.config.log_every_steps == 0 and self.is_main:
            logger.info("epoch %d step %d batch %d/%d: loss %.6g lr %.3g grad_norm %.3g",
                        progress.epoch, progress.global_step, progress.batch_in_epoch, self.batches_per_epoch,
                        outcome.loss, lr_used, outcome.grad_norm)
        if outcome.kind == "ok":
            bar.set_postfix(loss=f"{outcome.loss:.4g}", lr=f"{lr_used:.2e}", refresh=False)
        self._notify("on_step_end", progress.global_step, metrics)

    # ================================================================== rollback
    def _rollback(self) -> None:
        """Restore weights, optimizer, scaler and EMA from the rollback checkpoint and lower the lr.

        The data position, RNG and counters move on: replaying the same batches would likely
        hit the same trouble, so the batches since the rollback point are simply not learnt from.
        """
        source = self.files.rollback_source()
        checkpoint = load_checkpoint(source, map_location=self.device)
        self._load_training_state(checkpoint)
        self.guard.record_rollback(
            step=self.progress.global_step, source=source,
            source_step=int(checkpoint["progress"]["global_step"]),
            rollback_lr_factor=self.config.rollback_lr_factor,
        )
        self.lr.factor = self.guard.lr_factor
        self.lr.apply(self.progress.global_step)
        # Replace the suspect last.pt by the restored state, keeping rollback.pt as it is.
        self._write_checkpoint(healthy=False)

    def _load_training_state(self, checkpoint: Mapping[str, Any]) -> None:
        """Weights, optimizer, scaler and EMA from a checkpoint (not the scheduler: it is a pure
        function of the step, re-applied by the caller)."""
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        if self.scaler is not None and checkpoint.get("scaler"):
            self.scaler.load_state_dict(checkpoint["scaler"])
        if self.ema is not None:
            if checkpoint.get("ema") is not None:
                self.ema.module.load_state_dict(checkpoint["ema"]["module"])
                generator = getattr(self.ema, "_sr_generator", None)
                if generator is not None and checkpoint["ema"].get("generator") is not None:
                    generator.set_state(checkpoint["ema"]["generator"].cpu())
            else:
                logger.warning("the checkpoint has no EMA weights (trained with ema: false); EMA restarts from the weights")
                self.ema.module.load_state_dict(self.model.state_dict())

    # ================================================================== resume
    def _resume_or_start(self) -> str | None:
        """Load last.pt when resuming, else seed a fresh run. Returns the stored stop reason when
        the checkpointed run had already ended for good, else None."""
        config = self.config
        last_exists = self.files.last.exists()
        if config.resume is True and not last_exists:
            raise CheckpointError(f"resume: true but {self.files.last} does not exist; use resume: auto to start "
                                  "fresh when there is nothing to resume")
        if config.resume in ("auto", True) and last_exists:
            checkpoint = load_checkpoint(self.files.last, map_location=self.device)
            self._resume_from(checkpoint)
            stored_reason = checkpoint.get("stopped_reason")
            if stored_reason in TERMINAL_REASONS:
                return stored_reason
            if self.progress.epoch >= config.epochs:
                return "completed"
            if config.max_steps is not None and self.progress.global_step >= config.max_steps:
                return "max_steps"
            return None
        if config.resume is False and self.is_main:
            self._move_previous_run_aside()
        distributed.barrier()
        seed_everything(config.seed + self.rank)
        self.lr.apply(0)
        return None

    def _move_previous_run_aside(self) -> None:
        """resume: false in a run_dir with checkpoints: move them to previous-<time>/ rather than
        overwrite or mix them with the new run's."""
        existing = [p for p in (self.files.last, self.files.rollback, self.files.best, self.files.report) if p.exists()]
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

    def _resume_from(self, checkpoint: Mapping[str, Any]) -> None:
        self._warn_about_changed_settings(checkpoint.get("config") or {})
        self._load_training_state(checkpoint)
        if self.scheduler is not None and checkpoint.get("scheduler") is not None:
            self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.progress = _Progress(**checkpoint["progress"])
        self.guard = GuardState.from_state_dict(checkpoint["guard"])
        self.early = _EarlyStopping(**checkpoint["early_stopping"])
        self.history = list(checkpoint["history"])
        self.lr.factor = self.guard.lr_factor
        self.lr.apply(self.progress.global_step)
        rng = checkpoint["rng"]
        if rng["world_size"] == self.world_size:
            restore_rng_state(rng["per_rank"][self.rank])
        else:
            logger.warning("checkpoint written by %d rank(s), resuming on %d: RNG streams re-seeded, so the "
                           "resumed run will not match an uninterrupted one exactly", rng["world_size"], self.world_size)
            seed_everything(mix_seed(self.config.seed, self.rank, self.progress.global_step))
        self.resumed = True
        self._info("resumed from %s: epoch %d, batch %d, step %d", self.files.last, self.progress.epoch,
                    self.progress.batch_in_epoch, self.progress.global_step)

    def _warn_about_changed_settings(self, saved: Mapping[str, Any]) -> None:
        current = self.config.to_dict()
        changed = [f"{key}: {saved.get(key)!r} -> {value!r}" for key, value in current.items()
                   if key not in RESUME_SAFE_FIELDS and key in saved and saved[key] != value]
        if changed:
            logger.warning("resuming with changed settings (the result will differ from an uninterrupted run): %s",
                           "; ".join(changed))

    # ================================================================== checkpoints
    def _write_checkpoint(self, *, is_best: bool = False, stopped_reason: str | None = None,
                          healthy: bool | None = None) -> None:
        """Save the full training state as last.pt (rank 0), gathering every rank's RNG state."""
        self._tick()
        rng_states = distributed.gather_objects(capture_rng_state())
        if not self.is_main:
            return
        if healthy is None:
            healthy = self.guard.consecutive_bad_steps == 0
        path = self.files.write(self._checkpoint_state(rng_states, stopped_reason), healthy=healthy, is_best=is_best)
        logger.debug("checkpoint: %s (step %d%s)", path, self.progress.global_step, ", best" if is_best else "")
        self._notify("on_checkpoint", path, is_best)

    def _checkpoint_state(self, rng_states: list[dict[str, Any]], stopped_reason: str | None) -> dict[str, Any]:
        """The checkpoint dict; only tensors and plain Python values (torch.load(weights_only=True))."""
        ema_state = None
        if self.ema is not None:
            generator = getattr(self.ema, "_sr_generator", None)
            ema_state = {"module": self.ema.module.state_dict(),
                         "generator": generator.get_state() if generator is not None else None}
        return {
            "format_version": CHECKPOINT_FORMAT_VERSION,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "ema": ema_state,
            "rng": {"world_size": self.world_size, "per_rank": rng_states},
            "data_order": {
                "seed": self.config.seed,
                "epoch": 0 if self.config.overfit_batches else self.progress.epoch,
                "start_batch": self.progress.batch_in_epoch,
                "engine_sampler": self.sampler is not None,
            },
            "progress": asdict(self.progress),
            "guard": self.guard.state_dict(),
            "early_stopping": asdict(self.early),
            "history": [dict(entry) for entry in self.history],
            "config": self.config.to_dict(),
            "metadata": self.metadata,
            "stopped_reason": stopped_reason,
            "torch_version": str(torch.__version__),
            "saved_at": time.time(),
        }

    def _all_failed_batches(self) -> list[dict[str, Any]]:
        """Failed-batch records of every rank (a collective under DDP: all ranks must call it)."""
        per_rank = distributed.gather_objects(self.guard.failed_batches)
        return [record for records in per_rank for record in records]

    def _write_report(self, *, stopped_reason: str | None, failed_batches: list[dict[str, Any]]) -> None:
        if self.is_main:
            self.guard.write_report(self.files.report, stopped_reason=stopped_reason, config=self.config.to_dict(),
                                    failed_batches=failed_batches)

    # ================================================================== helpers
    def _tick(self) -> None:
        """Add the time since the last tick to the epoch's seconds."""
        now = time.monotonic()
        self.progress.epoch_seconds += now - self._clock
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
            "device": str(self.device),
            "amp": self.amp.describe(),
            "resumed": self.resumed,
            "start_epoch": self.progress.epoch,
            "start_step": self.progress.global_step,
            "batches_per_epoch": self.batches_per_epoch,
            "steps_per_epoch": self.steps_per_epoch,
            "world_size": self.world_size,
            "metadata": self.metadata,
        }

    def _result(self, reason: str, failed_batches: list[dict[str, Any]] | None = None) -> FitResult:
        return FitResult(
            best_val_loss=self.early.best_val_loss,
            best_epoch=self.early.best_epoch,
            epochs_run=self.progress.epoch,
            steps=self.progress.global_step,
            stopped_reason=reason,
            history=[dict(entry) for entry in self.history],
            last_checkpoint=self.files.last if self.files.last.exists() else None,
            best_checkpoint=self.files.best if self.files.best.exists() else None,
            skipped_sample_ids=self.guard.skipped_sample_ids(failed_batches),
            bad_steps=self.guard.total_bad_steps,
            rollbacks=self.guard.rollbacks,
            report_path=self.files.report if self.files.report.exists() else None,
            signal_number=self.stop.signal_number,
            resumed=self.resumed,
        )
