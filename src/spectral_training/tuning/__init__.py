"""Hyperparameter search: Optuna studies over a family's search space, trials through the shared runner.

    plan = plan_study("vit", params["vit"], {"training_defaults": ..., "classifier_defaults": ...},
                      params["tune_vit"], params["tune"], dataset="indian_pines")
    outcome = run_study(plan, store, sample_index, band_stats, models_root, tracker=MlflowTrialTracker())
    report = study_report(outcome.study, plan)

Modules, one job each: space (the search space from conf, paths into the family's block),
settings (the ``tune`` block, sampler, pruner), plan (family + space + settings, checked before
the study), objective (one trial: resolve, train, report, prune), study (storage, create or
resume, interrupted trials, the trial loop), report (trials table, report, best parameters file),
plots (Optuna's matplotlib plots). No Kedro and no MLflow here: tracking is passed in.
"""

from spectral_training.tuning.objective import NoTracking, PruningCallback, TrialObjective, TrialTracker
from spectral_training.tuning.plan import StudyPlan, plan_study, study_name_for
from spectral_training.tuning.plots import PLOT_NAMES, study_plots
from spectral_training.tuning.report import best_params_file, metric_values, study_report, trials_table
from spectral_training.tuning.settings import TuneSettings, redacted
from spectral_training.tuning.space import Dimension, SearchSpace, TuneError
from spectral_training.tuning.study import count_finished, load_study, open_study, recover_interrupted, run_study

__all__ = [
    "PLOT_NAMES",
    "Dimension",
    "NoTracking",
    "PruningCallback",
    "SearchSpace",
    "StudyPlan",
    "TrialObjective",
    "TrialTracker",
    "TuneError",
    "TuneSettings",
    "best_params_file",
    "count_finished",
    "load_study",
    "metric_values",
    "open_study",
    "plan_study",
    "recover_interrupted",
    "redacted",
    "run_study",
    "study_name_for",
    "study_plots",
    "study_report",
    "trials_table",
]
