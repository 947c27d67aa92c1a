"""Trials as nested MLflow runs under the study's run (the run kedro-mlflow opened for `kedro run`).

Each trial's run holds its sampled parameters (named by their paths, e.g. ``train.lr``), its
curves (the engine's callback: ``step/*`` and ``epoch/*`` metrics), its ``objective`` value and
the tags ``trial_state`` (complete | pruned | failed, as Optuna's state) and ``fail_reason``; a
trial interrupted by a signal or a killed process is failed with the status KILLED. The parent
run gets ``trial_value`` per completed trial number. With no active run, nothing is recorded.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient

from spectral_training.training.callbacks import TrainingCallback

from .mlflow_callback import MlflowTrainingCallback, active_run_id

# MLflow run status and `trial_state` tag of each trial outcome.
RUN_STATUS = {"complete": "FINISHED", "pruned": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}
STATE_TAG = {"complete": "complete", "pruned": "pruned", "failed": "failed", "interrupted": "failed"}
_TAG_LIMIT = 5000


class TrialTrainingCallback(MlflowTrainingCallback):
    """The engine's MLflow callback for a trial's run: curves, no resume marker (a trial is
    resumed by the study, not by the marker of a family's run), the checkpoint only on request."""

    def __init__(self, run_name: str, tags: Mapping[str, str] | None = None, log_checkpoints: bool = False) -> None:
        super().__init__(Path("."), run_name, tags=dict(tags or {}))
        self.log_checkpoints = log_checkpoints

    def on_fit_start(self, config, state: dict[str, Any]) -> None:
        if self.run_id:
            for key, value in {**self.tags, "training_run": self.run_name,
                               "resumed": str(bool(state.get("resumed")))}.items():
                self._client.set_tag(self.run_id, key, value)

    def on_fit_end(self, result) -> None:
        if not self.run_id:
            return
        self._flush()
        self._client.set_tag(self.run_id, "stopped_reason", result.stopped_reason)
        path = result.best_checkpoint or result.last_checkpoint
        if self.log_checkpoints and path and Path(path).is_file():
            self._client.log_artifact(self.run_id, str(path), artifact_path="model")


class NestedTrialRun:
    """One trial's nested run (see :class:`spectral_training.tuning.objective.TrialRun`)."""

    def __init__(self, run_id: str, parent_run_id: str, number: int, log_checkpoints: bool) -> None:
        self.run_id = run_id
        self.parent_run_id = parent_run_id
        self.number = number
        self.log_checkpoints = log_checkpoints
        self.status = "FAILED"  # until finish() says otherwise
        self._client = MlflowClient()

    def callbacks(self, run_name: str) -> list[TrainingCallback]:
        return [TrialTrainingCallback(run_name, log_checkpoints=self.log_checkpoints)]

    def finish(self, state: str, value: float | None, reason: str | None) -> None:
        self._client.set_tag(self.run_id, "trial_state", STATE_TAG.get(state, "failed"))
        if state == "interrupted":
            reason = f"interrupted: {reason} (queued again)"
        if reason:
            self._client.set_tag(self.run_id, "prune_reason" if state == "pruned" else "fail_reason",
                                 reason[:_TAG_LIMIT])
        if value is not None and math.isfinite(value):
            self._client.log_metric(self.run_id, "objective", float(value))
            if state == "complete":
                self._client.log_metric(self.parent_run_id, "trial_value", float(value), step=self.number)
        self.status = RUN_STATUS.get(state, "FAILED")


class MlflowTrialTracker:
    """Opens each trial as a nested run of the active MLflow run (the study's)."""

    def __init__(self, log_checkpoints: bool = False) -> None:
        self.parent_run_id = active_run_id()
        self.log_checkpoints = log_checkpoints

    @contextlib.contextmanager
    def trial(self, number: int, params: Mapping[str, Any], tags: Mapping[str, str]) -> Iterator[Any]:
        if self.parent_run_id is None:
            from spectral_training.tuning.objective import UntrackedRun  # lazily: tracking needs no Optuna

            yield UntrackedRun()
            return
        run = mlflow.start_run(run_name=f"trial-{number:04d}", nested=True,
                               tags={**tags, "trial_number": str(number), "trial_state": "running"})
        handle = NestedTrialRun(run.info.run_id, self.parent_run_id, number, self.log_checkpoints)
        try:
            if params:
                mlflow.log_params(dict(params))
            yield handle
        finally:
            mlflow.end_run(status=handle.status)


def end_interrupted_runs(runs: Mapping[str, str]) -> None:
    """End the still-running trial runs of a process that died ({run id: reason}) as failed, KILLED."""
    client = MlflowClient()
    for run_id, reason in runs.items():
        try:
            if client.get_run(run_id).info.status != "RUNNING":
                continue
        except Exception:  # gone from the tracking store
            continue
        client.set_tag(run_id, "trial_state", "failed")
        client.set_tag(run_id, "fail_reason", f"interrupted: {reason} (queued again)"[:_TAG_LIMIT])
        client.set_terminated(run_id, status="KILLED")


def set_run_tags(tags: Mapping[str, Any]) -> None:
    """Tag the active run (the study's), if any."""
    if mlflow.active_run() is not None:
        mlflow.set_tags({key: str(value) for key, value in tags.items()})
