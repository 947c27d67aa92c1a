"""What a study found: the trials table, the report and the best parameters as a family's file."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from spectral_training.tuning.objective import FAIL_REASON, INTERRUPTED, RETRY_OF
from spectral_training.tuning.plan import StudyPlan
from spectral_training.tuning.settings import redacted
from spectral_training.tuning.space import nested

STATES = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed",
          TrialState.RUNNING: "running", TrialState.WAITING: "waiting"}


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def trial_row(trial: FrozenTrial) -> dict[str, Any]:
    """One trial as plain JSON: number, state, value, parameters ({path: value}), why it ended."""
    state = STATES.get(trial.state, trial.state.name.lower())
    steps = sorted(trial.intermediate_values)
    if trial.state == TrialState.FAIL:
        reason = trial.user_attrs.get(FAIL_REASON) or trial.user_attrs.get(INTERRUPTED) or "its worker stopped"
    elif trial.state == TrialState.PRUNED:
        reason = f"pruned after epoch {steps[-1]}" if steps else "pruned"
    else:
        reason = None
    duration = trial.duration.total_seconds() if trial.duration is not None else None
    return {
        "number": trial.number,
        "state": state,
        "value": _number(trial.value) if trial.values else None,
        "params": dict(trial.params),
        "reason": reason,
        "epochs_reported": len(steps),
        "last_reported": _number(trial.intermediate_values[steps[-1]]) if steps else None,
        "run_name": trial.user_attrs.get("run_name"),
        "retry_of": trial.user_attrs.get(RETRY_OF),
        "started": trial.datetime_start.isoformat() if trial.datetime_start else None,
        "seconds": round(duration, 2) if duration is not None else None,
    }


def trials_table(study: optuna.Study) -> list[dict[str, Any]]:
    return [trial_row(t) for t in study.get_trials(deepcopy=False)]


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:  # no complete trial yet
        return None


def study_report(study: optuna.Study, plan: StudyPlan) -> dict[str, Any]:
    """The best trial, its value and parameters, and how many trials ended in each state."""
    trials = trials_table(study)
    best = best_trial(study)
    counts = Counter(row["state"] for row in trials)
    return {
        "study_name": plan.study_name,
        "storage": redacted(plan.settings.storage_url()),
        "family": plan.family,
        "dataset": plan.dataset,
        "objective": {"monitor": plan.monitor, "direction": plan.direction},
        "n_trials_requested": plan.settings.n_trials,
        "states": {state: counts.get(state, 0) for state in STATES.values()},
        "best": None if best is None else {
            "number": best.number,
            "value": _number(best.value),
            "params": dict(best.params),
            "run_name": best.user_attrs.get("run_name"),
        },
        "search_space": plan.space.to_dict()["space"],
        "settings": plan.settings.to_dict() | {"storage": redacted(plan.settings.storage_url())},
        "trials": trials,
    }


def best_params_file(study: optuna.Study, plan: StudyPlan) -> dict[str, Any]:
    """``{<family>: {only the tuned keys}}``: the best trial's values, nested by their paths.

    Merged into the family's block (e.g. saved as ``conf/local/parameters_best_<family>.yml``),
    it trains the family with them. Empty when no trial completed.
    """
    best = best_trial(study)
    return {plan.family: nested(best.params) if best is not None else {}}


def metric_values(study: optuna.Study) -> dict[str, dict[str, float]]:
    """Headline numbers for MLflow (kedro-mlflow's metrics format)."""
    counts = Counter(STATES.get(t.state, "other") for t in study.get_trials(deepcopy=False))
    values = {f"trials_{state}": float(counts.get(state, 0)) for state in ("complete", "pruned", "failed")}
    best = best_trial(study)
    if best is not None and _number(best.value) is not None:
        values["best_value"] = float(best.value)
    return {name: {"value": value, "step": 0} for name, value in values.items()}
