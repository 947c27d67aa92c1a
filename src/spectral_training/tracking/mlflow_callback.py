"""Per-step and per-epoch metrics, checkpoints and the model, from the engine to MLflow."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from spectral_training.training.callbacks import TrainingCallback

from .run_marker import remove_marker, write_marker

log = logging.getLogger(__name__)


def active_run_id() -> str | None:
    run = mlflow.active_run()
    return run.info.run_id if run else None


class MlflowTrainingCallback(TrainingCallback):
    """Logs to the active MLflow run (does nothing when there is none).

    Step metrics are sent in batches of ``flush_every`` steps (one SQLite transaction per step
    would cost more than a small model's step), and at every checkpoint: what a checkpoint holds
    is in MLflow too, so a killed run resumed from it leaves no gap in the metric history.
    """

    def __init__(self, runs_root: str | Path, run_name: str, tags: dict[str, str] | None = None, flush_every: int = 20,
                 *, config_key: str | None = None, data_hash: str | None = None):
        self.run_id = active_run_id()
        self.runs_root = Path(runs_root)
        self.run_name = run_name
        self.config_key = config_key  # with data_hash: which rerun may rejoin this MLflow run after a kill
        self.data_hash = data_hash
        self.tags = tags or {}
        self.flush_every = flush_every
        self._pending: list[Metric] = []
        self._client = MlflowClient() if self.run_id else None

    def _log(self, metrics: dict[str, Any], step: int, prefix: str) -> None:
        if not self.run_id:
            return
        import time

        now = int(time.time() * 1000)
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and value == value:  # skip NaN and non-numbers
                self._pending.append(Metric(f"{prefix}{key}", float(value), now, int(step)))

    def _flush(self) -> None:
        if self._pending and self._client:
            for start in range(0, len(self._pending), 1000):  # MLflow's batch limit
                self._client.log_batch(self.run_id, metrics=self._pending[start : start + 1000])
            self._pending = []

    def on_fit_start(self, config, state: dict[str, Any]) -> None:
        if not self.run_id:
            return
        write_marker(self.runs_root, self.run_id, self.run_name, config_key=self.config_key, data_hash=self.data_hash)
        # Client calls with the run id, not mlflow.set_tags: under `train.nproc_per_node` this
        # callback runs in a torchrun worker, where the run kedro-mlflow opened is not active.
        for key, value in {**self.tags, "training_run": self.run_name, "resumed": str(bool(state.get("resumed")))}.items():
            self._client.set_tag(self.run_id, key, str(value))

    def on_step_end(self, step: int, metrics: dict[str, float]) -> None:
        self._log(metrics, step, "step/")
        if step % self.flush_every == 0:
            self._flush()

    def on_checkpoint(self, path, is_best: bool) -> None:
        self._flush()

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        self._log({k: v for k, v in metrics.items() if k != "epoch"}, epoch, "epoch/")
        self._flush()

    def on_fit_end(self, result) -> None:
        if not self.run_id:
            return
        self._flush()
        self._client.set_tag(self.run_id, "stopped_reason", result.stopped_reason)
        # The best checkpoint is the model (weights, build arguments, band stats, band list);
        # the last one stays on disk for resuming.
        path = result.best_checkpoint or result.last_checkpoint
        if path and Path(path).is_file():
            self._client.log_artifact(self.run_id, str(path), artifact_path="model")
        if result.stopped_reason != "signal":
            remove_marker(self.runs_root, self.run_name)
