"""One trial: sample the space, resolve the family's parameters, train through the shared runner
(``families.runs.train_family``, the code path of a normal run) while reporting the monitored
metric to Optuna every epoch, and end as complete, pruned, failed or interrupted.

Tracking is passed in (a :class:`TrialTracker`); this module imports neither MLflow nor Kedro.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import os
import socket
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ContextManager, Protocol

import optuna
import pandas as pd
import torch

from spectral_training import families
from spectral_training.cubes.store import CubeStore
from spectral_training.families.runs import run_id, train_family
from spectral_training.training import StopTraining, TrainingCallback
from spectral_training.tuning.plan import StudyPlan

log = logging.getLogger(__name__)

# Trial user attributes.
FAIL_REASON = "fail_reason"  # a trial that failed on its own (counts towards n_trials)
INTERRUPTED = "interrupted"  # a trial whose process was stopped or died (retried, not counted)
RETRY_OF = "retry_of"  # the trial number a retry continues (its training run folder too)
ATTEMPT = "attempt"
WORKER = "worker"  # host:pid of the process running the trial
TRACKING_RUN = "mlflow_run_id"  # the trial's tracked run, if any


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


# ---------------------------------------------------------------------------------------- tracking
class TrialRun(Protocol):
    """A tracked trial (e.g. a nested MLflow run); ``run_id`` is kept in the trial's user attributes."""

    run_id: str | None

    def callbacks(self, run_name: str) -> list[TrainingCallback]:
        """Training callbacks that record the trial's curves."""

    def finish(self, state: str, value: float | None, reason: str | None) -> None:
        """Record the outcome: state is complete, pruned, failed or interrupted."""


class TrialTracker(Protocol):
    def trial(self, number: int, params: Mapping[str, Any], tags: Mapping[str, str]) -> ContextManager[TrialRun]:
        """Open the record of trial ``number`` with its sampled ``params`` ({path: value})."""


class UntrackedRun:
    """A trial nothing records."""

    run_id = None

    def callbacks(self, run_name: str) -> list[TrainingCallback]:
        return []

    def finish(self, state: str, value: float | None, reason: str | None) -> None:
        pass


class NoTracking:
    """The tracker when nothing records trials (tests, notebooks)."""

    @contextlib.contextmanager
    def trial(self, number: int, params: Mapping[str, Any], tags: Mapping[str, str]) -> Iterator[TrialRun]:
        yield UntrackedRun()


# ---------------------------------------------------------------------------------------- pruning
class PruningCallback(TrainingCallback):
    """Reports the monitored metric to the trial every epoch; ends training when Optuna prunes it.

    Put it last among the callbacks: the engine stops calling the others' ``on_epoch_end`` once
    one raises :class:`StopTraining`.
    """

    def __init__(self, trial: optuna.Trial, monitor: str) -> None:
        self.trial = trial
        self.monitor = monitor
        self.pruned_at: tuple[int, float] | None = None

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        value = metrics.get(self.monitor)
        if value is None or not math.isfinite(value):
            return
        self.trial.report(float(value), step=int(epoch))
        if self.trial.should_prune():
            self.pruned_at = (int(epoch), float(value))
            raise StopTraining(f"Optuna pruned trial {self.trial.number} at epoch {epoch} "
                               f"({self.monitor} {value:.4g})")


# ---------------------------------------------------------------------------------------- the trial
@dataclass
class TrialOutcome:
    state: str  # complete | pruned | failed | interrupted
    value: float | None = None
    reason: str | None = None
    run_name: str | None = None
    exit_code: int = 0


class TrialFailed(Exception):
    """A trial that could not produce a value; Optuna records it as FAIL and the study goes on."""


class TrialInterrupted(Exception):
    """A trial stopped by SIGTERM/SIGINT; the study stops and the trial is queued again."""


@dataclass
class TrialObjective:
    """The Optuna objective of a study: ``objective(trial) -> the trial's best monitored value``.

    Args:
        plan: the checked study plan (family, space, parameters, monitored metric).
        store, sample_index, band_stats: the data every trial trains on.
        trials_root: models root of the trial runs (``<trials_root>/<family>/trial0003-<label>-<hash>/``).
        tracker: records each trial (e.g. as a nested MLflow run).
        retry: called with (study, number, params, user_attrs) for an interrupted trial.
        device: the training device (None: the engine's default).
    """

    plan: StudyPlan
    store: CubeStore
    sample_index: pd.DataFrame
    band_stats: dict
    trials_root: Path
    tracker: TrialTracker
    retry: Callable[..., None]
    device: str | None = None
    interrupted_exit_code: int | None = None

    def __call__(self, trial: optuna.Trial) -> float:
        trial.set_user_attr(WORKER, worker_id())  # first: a trial of a process that dies is recognised by it
        values = self.plan.space.sample(trial)
        origin = int(trial.user_attrs.get(RETRY_OF, trial.number))
        tags = {"family": self.plan.family, "dataset": self.plan.dataset, "study": self.plan.study_name}
        with self.tracker.trial(trial.number, values, tags) as tracked:
            if tracked.run_id:
                trial.set_user_attr(TRACKING_RUN, tracked.run_id)
            outcome = self._train(trial, values, origin, tracked)
            tracked.finish(outcome.state, outcome.value, outcome.reason)
        return self._tell(trial, values, outcome)

    def _train(self, trial: optuna.Trial, values: dict, origin: int, tracked: TrialRun) -> TrialOutcome:
        family = families.get_family(self.plan.family)
        pruning = PruningCallback(trial, self.plan.monitor)
        name = None
        try:
            params = self.plan.trial_params(values)
            setup = family.prepare(self.store, self.sample_index, self.band_stats, params)
            name = f"trial{origin:04d}-{run_id(family.name, setup, params)}"
            trial.set_user_attr("run_name", name)
            run = train_family(family, setup, params, self.trials_root, run_name=name, device=self.device,
                               callbacks=[*tracked.callbacks(name), pruning])
        except Exception as error:  # out of memory, a bad combination of values, a systematic failure, ...
            log.exception("trial %d failed", trial.number)
            return TrialOutcome("failed", reason=f"{type(error).__name__}: {error}", run_name=name)
        finally:
            _release_memory()
        result = run.result
        trial.set_user_attr("stopped_reason", result.stopped_reason)
        trial.set_user_attr("epochs_run", result.epochs_run)
        if result.stopped_reason == "signal":
            return TrialOutcome("interrupted", reason=f"stopped by signal {result.signal_number} at epoch "
                                f"{result.epochs_run}", run_name=name, exit_code=result.exit_code)
        if pruning.pruned_at is not None:
            epoch, value = pruning.pruned_at
            return TrialOutcome("pruned", value=value, run_name=name,
                                reason=f"pruned at epoch {epoch} ({self.plan.monitor} {value:.4g})")
        if result.stopped_reason == "too_many_bad_steps":
            return TrialOutcome("failed", run_name=name, reason=f"training stopped on non-finite steps "
                                f"(too_many_bad_steps); see {result.report_path}")
        value = result.best_metric
        if value is None or not math.isfinite(value):
            return TrialOutcome("failed", run_name=name, reason=f"no finite {self.plan.monitor} (best {value}); "
                                f"the val split must not be empty")
        return TrialOutcome("complete", value=float(value), run_name=name)

    def _tell(self, trial: optuna.Trial, values: dict, outcome: TrialOutcome) -> float:
        """Return the value or raise what makes Optuna record the outcome's state."""
        if outcome.state == "complete":
            return float(outcome.value)
        if outcome.state == "pruned":
            raise optuna.TrialPruned(outcome.reason)
        if outcome.state == "interrupted":
            trial.set_user_attr(INTERRUPTED, outcome.reason)
            self.retry(trial.study, trial.number, values, trial.user_attrs)
            self.interrupted_exit_code = outcome.exit_code
            trial.study.stop()
            raise TrialInterrupted(outcome.reason)
        trial.set_user_attr(FAIL_REASON, outcome.reason)
        raise TrialFailed(outcome.reason)


def _release_memory() -> None:
    """Give back what a trial held (an out-of-memory trial must not starve the next one)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
