"""Guards against bad steps and bad batches, and the report they leave behind.

Two kinds of trouble, counted apart because they call for different cures:

* a **bad step**: the window's loss or gradient norm is NaN/Inf. The update is skipped (grads
  zeroed, weights untouched). `max_bad_steps` of them in a row means training is diverging:
  the engine rolls back to the rollback checkpoint with a lower lr, and once `max_rollbacks`
  rollbacks have been spent, the next streak stops the run ("too_many_bad_steps").
* a **failed batch**: forward or backward raised. That is a data problem (a corrupt tile, a
  shape the model rejects), so the batch's sample ids are recorded and its window skipped.
  Failing `max_consecutive_failed_batches` in a row, or every batch of an epoch, raises
  TrainingError instead of spinning through a dataset that cannot train.

Errors that break the model/batch contract (`ContractError`) are never skipped: they are bugs.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from spectral_training.training import distributed
from spectral_training.training.checkpoint import json_safe

logger = logging.getLogger("spectral_training.training")


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. every batch of an epoch raised)."""


class ContractError(TypeError):
    """The model or the batches break the engine's contract (batches are dicts with a "cube"
    tensor unless a forward_fn is given; the model returns a dict with a scalar "loss" tensor).
    Never skipped as a bad batch: it is a bug, and every batch would hit it."""


@dataclass
class GuardState:
    """Counters and records of the guards; saved in every checkpoint under "guard"."""

    consecutive_bad_steps: int = 0
    consecutive_failed_batches: int = 0
    rollbacks: int = 0
    lr_factor: float = 1.0
    total_bad_steps: int = 0
    bad_steps: list[dict[str, Any]] = field(default_factory=list)
    rollback_events: list[dict[str, Any]] = field(default_factory=list)
    failed_batches: list[dict[str, Any]] = field(default_factory=list)

    # ------------------------------------------------------------ bad steps
    def record_bad_step(
        self, *, step: int, epoch: int, batch_in_epoch: int, sample_ids: list[str], loss: float, grad_norm: float,
        reason: str | None = None,
    ) -> None:
        """Count a skipped update and log it with the sample ids of its window (``reason``: why, when
        it is not a non-finite loss or gradient norm, e.g. no parameter received a gradient)."""
        self.consecutive_bad_steps += 1
        self.total_bad_steps += 1
        reason = reason or ("non-finite loss" if not math.isfinite(loss) else "non-finite gradient norm")
        self.bad_steps.append(
            {
                "step": step,
                "epoch": epoch,
                "batch_in_epoch": batch_in_epoch,
                "reason": reason,
                "loss": loss,
                "grad_norm": grad_norm,
                "sample_ids": list(sample_ids),
            }
        )
        if not distributed.is_main_process():
            return
        logger.warning(
            "step %d (epoch %d, batch %d): %s (loss=%s, grad_norm=%s); update skipped, %d bad step(s) in a row; "
            "samples: %s",
            step, epoch, batch_in_epoch, reason, loss, grad_norm, self.consecutive_bad_steps, _short(sample_ids),
        )

    def record_good_step(self) -> None:
        self.consecutive_bad_steps = 0

    def needs_rollback(self, max_bad_steps: int) -> bool:
        return self.consecutive_bad_steps >= max_bad_steps

    def rollbacks_exhausted(self, max_rollbacks: int) -> bool:
        return self.rollbacks >= max_rollbacks

    def record_rollback(self, *, step: int, source: Path, source_step: int, rollback_lr_factor: float) -> None:
        """Count a rollback and lower the lr factor."""
        self.rollbacks += 1
        self.lr_factor *= rollback_lr_factor
        self.consecutive_bad_steps = 0
        self.rollback_events.append(
            {"step": step, "restored_from": source.name, "restored_step": source_step, "lr_factor": self.lr_factor}
        )
        if not distributed.is_main_process():
            return
        logger.warning(
            "step %d: rolled back to %s (state of step %d); lr factor is now %g (rollback %d)",
            step, source.name, source_step, self.lr_factor, self.rollbacks,
        )

    # ------------------------------------------------------------ failed batches
    def record_failed_batch(
        self, *, step: int, epoch: int, batch_in_epoch: int, sample_ids: list[str], error: BaseException | None
    ) -> None:
        """Record a batch whose forward/backward raised; it is skipped.

        Under DDP every rank calls this when any rank's batch raised (so the counters, and the
        decision to give up, agree); `error` is None on the ranks whose own batch was fine, and
        only the rank that saw the error keeps the details.
        """
        self.consecutive_failed_batches += 1
        if error is None:
            return
        record = {
            "step": step,
            "epoch": epoch,
            "batch_in_epoch": batch_in_epoch,
            "error": f"{type(error).__name__}: {error}",
            "sample_ids": list(sample_ids),
        }
        if distributed.is_distributed():
            record["rank"] = distributed.rank()
        self.failed_batches.append(record)
        logger.warning(
            "%sepoch %d batch %d raised %s: %s; batch skipped; samples: %s",
            f"rank {distributed.rank()}: " if distributed.is_distributed() else "",
            epoch, batch_in_epoch, type(error).__name__, error, _short(sample_ids),
            exc_info=logger.isEnabledFor(logging.DEBUG),
        )

    def record_successful_batch(self) -> None:
        self.consecutive_failed_batches = 0

    def skipped_sample_ids(self, failed_batches: list[dict[str, Any]] | None = None) -> list[str]:
        """Sample ids of every failed batch (of `failed_batches`, default this rank's), in order,
        without repeats."""
        seen: dict[str, None] = {}
        for record in self.failed_batches if failed_batches is None else failed_batches:
            for sample_id in record["sample_ids"]:
                seen.setdefault(sample_id, None)
        return list(seen)

    # ------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> "GuardState":
        return cls(**state)

    def write_report(self, path: Path, *, stopped_reason: str | None, config: dict[str, Any],
                     failed_batches: list[dict[str, Any]] | None = None) -> Path:
        """Write the JSON report of bad steps, rollbacks and failed batches (`failed_batches`:
        every rank's records under DDP; default this rank's)."""
        failed_batches = self.failed_batches if failed_batches is None else failed_batches
        report = {
            "stopped_reason": stopped_reason,
            "total_bad_steps": self.total_bad_steps,
            "rollbacks": self.rollbacks,
            "lr_factor": self.lr_factor,
            "limits": {key: config[key] for key in ("max_bad_steps", "max_rollbacks", "rollback_lr_factor",
                                                    "max_consecutive_failed_batches")},
            "bad_steps": self.bad_steps,
            "rollback_events": self.rollback_events,
            "failed_batches": failed_batches,
            "skipped_sample_ids": self.skipped_sample_ids(failed_batches),
        }
        temp_path = path.with_name(path.name + ".tmp")
        temp_path.write_text(json.dumps(json_safe(report), indent=2))
        temp_path.replace(path)
        return path


def _short(sample_ids: list[str], limit: int = 16) -> str:
    if len(sample_ids) <= limit:
        return ", ".join(map(str, sample_ids)) or "(no sample ids in batch)"
    return ", ".join(map(str, sample_ids[:limit])) + f", ... ({len(sample_ids)} in all)"
