"""Studies in an Optuna RDB storage: created or resumed by name, interrupted trials recovered,
run until ``n_trials`` trials have finished.

Resuming is Optuna's own: the storage holds every trial, so the same command continues the study.
Before it does, trials left RUNNING by a process that died are failed and queued again (those of
this machine at once, by their process id; those of other machines through Optuna's heartbeat,
after ``grace_period``). Several workers may share one storage (PostgreSQL, MySQL): each runs
trials of the same study, and each stops when the study has ``n_trials`` finished trials.
"""

from __future__ import annotations

import logging
import os
import socket
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from spectral_training.cubes.store import CubeStore
from spectral_training.tuning.objective import (
    ATTEMPT,
    FAIL_REASON,
    INTERRUPTED,
    RETRY_OF,
    WORKER,
    NoTracking,
    TrialObjective,
    TrialTracker,
)
from spectral_training.tuning.plan import StudyPlan
from spectral_training.tuning.settings import TuneSettings, redacted, sqlite_file
from spectral_training.tuning.space import TuneError

log = logging.getLogger(__name__)

DEFINITION = "definition"  # the study's user attribute: what the study optimises (StudyPlan.definition)


@dataclass
class StudyOutcome:
    study: optuna.Study
    interrupted_exit_code: int | None  # set when a signal stopped the study; exit with it
    recovered: list[FrozenTrial]  # trials left running by a dead process, failed at the start of this run


def finished(trial: FrozenTrial) -> bool:
    """Counts towards ``n_trials``: complete, pruned, or failed on its own (not interrupted)."""
    return trial.state in (TrialState.COMPLETE, TrialState.PRUNED) or (
        trial.state == TrialState.FAIL and FAIL_REASON in trial.user_attrs)


def count_finished(study: optuna.Study) -> int:
    return sum(finished(t) for t in study.get_trials(deepcopy=False))


class _RetryInterrupted:
    """Queue an interrupted trial's parameters again (at most ``max_retry`` times); the retry
    trains in the interrupted trial's run folder, so its training resumes from the last checkpoint."""

    def __init__(self, max_retry: int) -> None:
        self.max_retry = max_retry

    def __call__(self, study: optuna.Study, number: int, params: Mapping[str, Any],
                 user_attrs: Mapping[str, Any]) -> None:
        attempt = int(user_attrs.get(ATTEMPT, 0)) + 1
        if attempt > self.max_retry:
            log.warning("trial %d was interrupted; not retried (tune.retry_interrupted=%d)", number, self.max_retry)
            return
        origin = int(user_attrs.get(RETRY_OF, number))
        study.enqueue_trial(dict(params), user_attrs={RETRY_OF: origin, ATTEMPT: attempt})
        log.info("trial %d was interrupted; its parameters are queued again (continuing trial %d's run)",
                 number, origin)

    def heartbeat(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Optuna's heartbeat_stale_trial_callback: a trial whose worker stopped beating."""
        self(study, trial.number, trial.params, trial.user_attrs)


def make_storage(settings: TuneSettings, retry: _RetryInterrupted) -> optuna.storages.RDBStorage:
    """The RDB storage (a SQLite file's folder is created); heartbeats find dead workers' trials."""
    url = settings.storage_url()
    path = sqlite_file(url)
    engine_kwargs: dict[str, Any] = {}
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs = {"connect_args": {"timeout": 60}}  # wait for another writer instead of failing
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            url, engine_kwargs=engine_kwargs, heartbeat_interval=settings.heartbeat_interval,
            grace_period=settings.grace_period if settings.heartbeat_interval else None,
            heartbeat_stale_trial_callback=retry.heartbeat if settings.heartbeat_interval else None)


def open_study(plan: StudyPlan, retry: _RetryInterrupted | None = None) -> optuna.Study:
    """Create the plan's study, or load it when it exists and optimises the same thing.

    Raises:
        TuneError: the stored study was started with another family, objective, search space or
            starting parameters (naming what changed and how to start a new study).
    """
    settings = plan.settings
    retry = retry or _RetryInterrupted(settings.retry_interrupted)
    storage = make_storage(settings, retry)
    study = optuna.create_study(study_name=plan.study_name, storage=storage, direction=plan.direction,
                                load_if_exists=True)
    definition = plan.definition()
    stored = study.user_attrs.get(DEFINITION)
    if stored is None:
        study.set_user_attr(DEFINITION, definition)
    elif stored != definition:
        changes = _differences(stored, definition)
        raise TuneError(
            f"the study '{plan.study_name}' in {redacted(storage.url)} was started with other settings "
            f"({'; '.join(changes[:6])}{'; ...' if len(changes) > 6 else ''}), so its trials do not compare with new "
            f"ones. Start another study with --params tune.study_name=<new name>, or delete this one: "
            f"optuna delete-study --storage <storage URL> --study-name {plan.study_name}")
    for point in settings.enqueue:  # points to try first (once: a resumed study does not queue them again)
        study.enqueue_trial(point, skip_if_exists=True)
    trials_so_far = len(study.get_trials(deepcopy=False))
    study.sampler = settings.sampler.build(trials_so_far)
    study.pruner = settings.pruner.build(plan.epochs)
    return study


def _differences(old: Any, new: Any, path: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            out += _differences(old.get(key, "<absent>"), new.get(key, "<absent>"), f"{path}.{key}" if path else key)
        return out
    return [] if old == new else [f"{path}: {old!r} -> {new!r}"]


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover_interrupted(study: optuna.Study, retry: _RetryInterrupted) -> list[int]:
    """Fail the RUNNING trials whose worker died, and queue their parameters again.

    A worker of this machine is known dead when its process id is gone; other machines' trials
    are left to Optuna's heartbeat (``optuna.storages.fail_stale_trials``). Returns the numbers
    of the trials failed here.
    """
    storage, host, failed = study._storage, socket.gethostname(), []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = str(trial.user_attrs.get(WORKER, ""))
        worker_host, _, pid = worker.rpartition(":")
        if worker_host != host or not pid.isdigit() or int(pid) == os.getpid() or _process_alive(int(pid)):
            continue
        try:
            storage.set_trial_user_attr(trial._trial_id, INTERRUPTED, f"its process ({worker}) ended while it ran")
            if not storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker got there first
        log.warning("trial %d was left running by a process that ended (%s): marked failed", trial.number, worker)
        failed.append(trial.number)
        retry(study, trial.number, trial.params, trial.user_attrs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    return failed


def run_study(plan: StudyPlan, store: CubeStore, sample_index: pd.DataFrame, band_stats: dict,
              models_root: str | Path, *, tracker: TrialTracker | None = None, device: str | None = None) -> StudyOutcome:
    """Run (or resume) the plan's study until it has ``n_trials`` finished trials or ``timeout`` passed.

    Trials train in ``<models_root>/tune/<study name>/<family>/trial<NNNN>-<label>-<hash>/``.
    A trial that raises is recorded as failed with its reason, and the study goes on; a signal
    stops the study (its trial is queued again for the next run).
    """
    settings = plan.settings
    retry = _RetryInterrupted(settings.retry_interrupted)
    study = open_study(plan, retry)
    recovered = recover_interrupted(study, retry)
    done = count_finished(study)
    remaining = settings.n_trials - done
    log.info("study %s (%s): %d of %d trials finished, %d to run", plan.study_name, redacted(settings.storage_url()),
             done, settings.n_trials, max(remaining, 0))
    objective = TrialObjective(plan, store, sample_index, band_stats, Path(models_root) / "tune" / plan.study_name,
                               tracker or NoTracking(), retry, device=device)
    if remaining > 0:
        study.optimize(objective, n_trials=remaining, timeout=settings.timeout, catch=(Exception,),
                       callbacks=[_StopWhenFinished(settings.n_trials)], gc_after_trial=True)
    return StudyOutcome(study, objective.interrupted_exit_code, [study.trials[n] for n in recovered])


class _StopWhenFinished:
    """Stop this worker once the study (all workers together) has ``n_trials`` finished trials."""

    def __init__(self, n_trials: int) -> None:
        self.n_trials = n_trials

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if count_finished(study) >= self.n_trials:
            study.stop()


def load_study(plan: StudyPlan) -> optuna.Study:
    """The plan's study as stored (for the report)."""
    return optuna.load_study(study_name=plan.study_name, storage=plan.settings.storage_url())
