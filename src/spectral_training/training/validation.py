"""One validation pass (mean loss and loss parts over every rank, plus the caller's metrics),
and the epoch's history entry built from it.

The pass runs on the unwrapped module (no DDP collectives inside, so ranks may hold different
batch counts), in eval mode, with RNGs seeded alike every epoch so that random masking gives
comparable losses from one epoch to the next. A batch that raises is skipped and counted; one
that breaks the model contract (ContractError) is a bug and propagates.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import torch
from torch import nn

from spectral_training.training import distributed
from spectral_training.training.amp import AmpSettings
from spectral_training.training.data import EpochBatchSampler, batch_sample_ids, batch_size_of
from spectral_training.training.guards import ContractError
from spectral_training.training.rng import isolated_rng
from spectral_training.training.state import EpochMetrics, Progress
from spectral_training.training.step import ForwardFn, loss_from_output, move_to_device

logger = logging.getLogger("spectral_training.training")


@dataclass
class ValidationResult:
    loss: float | None  # None without a loader; NaN when no batch could be validated
    parts: dict[str, float] = field(default_factory=dict)  # mean loss parts
    failed: int = 0  # batches that raised, over all ranks
    metrics: dict[str, float] = field(default_factory=dict)  # EpochMetrics.compute(), keys as returned


@torch.no_grad()
def validate(
    module: nn.Module,
    loader: Iterable[Any] | None,
    *,
    forward_fn: ForwardFn,
    amp: AmpSettings,
    device: torch.device,
    seed: int,
    sampler: EpochBatchSampler | None,
    limit: int | None,
    metrics_factory: Callable[[], EpochMetrics] | None = None,
) -> ValidationResult:
    """Mean val loss (weighted by batch size) and loss parts over all ranks, the number of val
    batches that raised, and `metrics_factory()`'s values (a fresh object for this pass).

    seed: the RNG seed of the pass (the caller mixes in the rank).
    sampler / limit: the engine's sampler of `loader` (set to epoch 0, first `limit` batches),
        or None, when the first `limit` batches of `loader` are taken as they come.
    """
    if loader is None:
        return ValidationResult(loss=None)
    if sampler is not None:
        sampler.set_epoch(0, batch_limit=limit)
    metrics = metrics_factory() if metrics_factory is not None else None
    was_training = module.training
    module.eval()
    loss_sum, count, failed = 0.0, 0.0, 0
    part_sums: dict[str, float] = {}
    try:
        with isolated_rng(seed):
            batches = iter(loader)
            if limit is not None and sampler is None:
                batches = itertools.islice(batches, limit)
            for batch in batches:
                try:
                    batch = move_to_device(batch, device)
                    with amp.autocast():
                        output = forward_fn(module, batch)
                        loss, parts = loss_from_output(output)
                except ContractError:
                    raise
                except Exception as error:
                    failed += 1
                    logger.warning("validation batch raised %s: %s; skipped; samples: %s",
                                   type(error).__name__, error, batch_sample_ids(batch)[:16])
                    continue
                # Outside the try: a metric that raises is a bug in the caller's code, not a bad batch.
                if metrics is not None:
                    metrics.update(output, batch)
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
    if count == 0:  # every rank agrees (count is global), so no rank is left waiting in a metric's sync
        return ValidationResult(loss=float("nan"), failed=failed)
    return ValidationResult(
        loss=loss_sum / count,
        parts={n: totals[3 + i] / count for i, n in enumerate(names)},
        failed=failed,
        metrics=_computed(metrics) if metrics is not None else {},
    )


def _computed(metrics: EpochMetrics) -> dict[str, float]:
    """metrics.compute() as {str: float}; 0-d tensors (torchmetrics' results) become floats."""
    values = metrics.compute()
    if not isinstance(values, Mapping):
        raise ContractError(f"{type(metrics).__name__}.compute() must return a dict of name -> number, "
                            f"got {type(values).__name__}")
    out: dict[str, float] = {}
    for name, value in values.items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ContractError(f"{type(metrics).__name__}.compute()['{name}'] is {type(value).__name__}; "
                                "expected a number or a one-element tensor")
        out[str(name)] = float(value)
    return out


def history_entry(progress: Progress, val: ValidationResult, *, lr: float,
                  val_loss_ema: float | None) -> dict[str, Any]:
    """The history entry of the epoch `progress` has just finished (see FitResult.history).

    Metric names are prefixed with "val_" ("/" becomes "_", so "macro_f1" and "val/x" read
    "val_macro_f1" and "val_val_x"); a name that would overwrite an engine key or a loss part
    is refused, since `monitor` could then silently follow the wrong number.
    """
    samples = progress.epoch_sample_count
    entry: dict[str, Any] = {
        "epoch": progress.epoch,
        "train_loss": progress.epoch_loss_sum / samples if samples else float("nan"),
        "val_loss": val.loss,
        "lr": lr,
        "bad_steps": progress.epoch_bad_steps,
        "skipped_batches": progress.epoch_failed_batches,
        "seconds": progress.epoch_seconds,
        "steps": progress.global_step,
    }
    if val_loss_ema is not None:
        entry["val_loss_ema"] = val_loss_ema
    if val.failed:
        entry["val_skipped_batches"] = val.failed
    for name, total in sorted(progress.epoch_part_sums.items()):
        entry[f"train_{name}"] = total / samples if samples else float("nan")
    for name, value in sorted(val.parts.items()):
        entry[f"val_{name}"] = value
    for name, value in sorted(val.metrics.items()):
        key = f"val_{name}".replace("/", "_")
        if key in entry:
            raise ContractError(f"val_metrics returned '{name}', whose history key '{key}' is already taken (by the "
                                f"engine or a loss part); rename it in compute()")
        entry[key] = value
    return entry
