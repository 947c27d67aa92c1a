"""Nodes of the tune pipeline: plan the study, check its first point, run it, report it.

Each node reads its inputs and calls :mod:`spectral_training.tuning` (the study) or
:mod:`spectral_training.tracking` (MLflow); the study itself lives in the Optuna storage named
by ``tune.storage``, so the same command resumes it.
"""

from __future__ import annotations

import logging

import pandas as pd
from matplotlib.figure import Figure

from spectral_training import families, tracking, tuning
from spectral_training.cubes.store import CubeStore
from spectral_training.families.checks import validate_family
from spectral_training.tuning import StudyPlan

log = logging.getLogger(__name__)


def plan_study(family: str, family_block: dict | None, training_defaults: dict, classifier_defaults: dict,
               search_space: dict | None, tune: dict, dataset: str) -> StudyPlan:
    """Check the family, its parameters, its search space (every path one the family reads) and
    the ``tune`` settings together, before any data is read.

    Returns:
        The study plan: family, search space, settings, the family's block and its resolved
        parameters, the monitored metric and its direction, the study's name.
    """
    defaults = {"training_defaults": training_defaults, "classifier_defaults": classifier_defaults}
    return tuning.plan_study(family, family_block, defaults, search_space, tune, dataset)


def validate_search_space(cube_store: CubeStore, sample_index: pd.DataFrame, band_stats: dict, plan: StudyPlan,
                          validation_params: dict) -> dict:
    """Pre-flight of the search space's first point (first choice, low ends) on the store.

    Returns:
        The transform report of that point (as the other stages' ``transform_report``), with the
        point under ``probe``.
    """
    probe = plan.space.probe()
    family = families.get_family(plan.family)
    report = validate_family(family, cube_store, sample_index, band_stats, plan.trial_params(probe),
                             validation_params)
    report["probe"] = probe
    return report


def run_study(cube_store: CubeStore, sample_index: pd.DataFrame, band_stats: dict, transform_report: dict,
              plan: StudyPlan, models_root: str, skip_validation: bool) -> list[dict]:
    """Run (or resume) the study until it has ``tune.n_trials`` finished trials or ``tune.timeout`` passed.

    Each trial trains through the shared runner in its own run folder
    (``<models_root>/tune/<study>/<family>/``) and is a nested MLflow run of this run. A trial
    that raises is recorded as failed and the study goes on; SIGTERM/SIGINT stops the study (the
    same command resumes it).

    Returns:
        The trials table: number, state, value, parameters, reason, run folder name.
    """
    if not transform_report.get("passed") and not skip_validation:
        reasons = "; ".join(transform_report.get("failed", [])) or "no report"
        raise tuning.TuneError(
            f"the pre-flight of the search space's first point {transform_report.get('probe')} failed for dataset "
            f"'{plan.dataset}': {reasons}. See data/08_reporting/{plan.dataset}/tune/{plan.family}/transform_report.json;"
            f" fix the family's parameters or the search space, or pass --params skip_validation=true")
    tracking.set_run_tags({"study": plan.study_name, "study_storage": tuning.redacted(plan.settings.storage_url()),
                           "family": plan.family, "dataset": plan.dataset})
    tracker = tracking.MlflowTrialTracker(log_checkpoints=plan.settings.log_checkpoints)
    outcome = tuning.run_study(plan, cube_store, sample_index, band_stats, models_root, tracker=tracker)
    tracking.end_interrupted_runs({t.user_attrs["mlflow_run_id"]: t.user_attrs.get("interrupted", "its process ended")
                                   for t in outcome.recovered if t.user_attrs.get("mlflow_run_id")})
    if outcome.interrupted_exit_code is not None:
        log.warning("the study was interrupted by a signal; run the same command to resume it")
        raise SystemExit(outcome.interrupted_exit_code)
    return tuning.trials_table(outcome.study)


def report_study(plan: StudyPlan, trials: list[dict]) -> tuple[dict, dict, dict, Figure, Figure, Figure]:
    """The study's report, best parameters and plots, read back from the storage.

    Returns:
        The report (best trial, value, parameters, trials per state, every trial), the best
        parameters as the family's parameter file (``{<family>: {tuned keys}}``), headline numbers
        for MLflow, then the optimisation history, parameter importances and parallel coordinates.
    """
    study = tuning.load_study(plan)
    report = tuning.study_report(study, plan)
    log.info("study %s: %s; best %s", plan.study_name, report["states"], report["best"])
    figures = tuning.study_plots(study)
    return (report, tuning.best_params_file(study, plan), tuning.metric_values(study),
            *(figures[name] for name in tuning.PLOT_NAMES))
