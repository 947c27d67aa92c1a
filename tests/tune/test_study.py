"""A tiny study end to end without Kedro: trials train through the shared runner, a hopeless one is
pruned, a failing one is recorded as failed while the study goes on, every trial is a nested MLflow
run, and the best parameters load as the family's parameters."""

import math

import mlflow
import pytest
from family_data import family_layers, labelled_store, tiny_overrides
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from tune_data import GOOD, HOPELESS, tiny_plan

from spectral_training import families, tuning
from spectral_training.families.params import deep_merge
from spectral_training.tracking import MlflowTrialTracker

# Trial 0 learns, trial 1 asks timm for an optimizer that does not exist, trial 2 cannot learn and
# is pruned at its first epoch (median pruner: one finished trial is enough, no warm-up).
POINTS = [{"train.lr": GOOD, "train.optimizer": "adam"},
          {"train.lr": GOOD, "train.optimizer": "no_such_optimizer"},
          {"train.lr": HOPELESS, "train.optimizer": "adam"}]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return labelled_store(tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="module")
def study_run(data, tmp_path_factory):
    """The study, run inside a parent MLflow run; (plan, outcome, parent run id, tracking URI, models root)."""
    folder = tmp_path_factory.mktemp("study")
    plan = tiny_plan(folder, n_trials=3, enqueue=POINTS, pruner={"n_startup_trials": 1, "n_warmup_steps": 0})
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        with mlflow.start_run(run_name="study") as parent:
            outcome = tuning.run_study(plan, *data, folder / "models", tracker=MlflowTrialTracker())
    finally:
        mlflow.set_tracking_uri(previous)
    return plan, outcome, parent.info.run_id, uri, folder / "models"


def _states(study):
    return [t.state for t in study.get_trials()]


def test_the_study_ends_with_a_complete_a_failed_and_a_pruned_trial(study_run):
    _, outcome, *_ = study_run
    assert _states(outcome.study) == [TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED]
    assert outcome.interrupted_exit_code is None


def test_the_objective_is_the_familys_monitored_metric_at_its_best_epoch(study_run):
    plan, outcome, *_ = study_run
    complete = outcome.study.trials[0]
    assert (plan.monitor, plan.direction) == ("val_macro_f1", "maximize")
    assert complete.value == max(complete.intermediate_values.values())
    assert len(complete.intermediate_values) == plan.epochs


def test_a_pruned_trial_stops_training_at_the_epoch_optuna_pruned_it(study_run):
    _, outcome, *_ = study_run
    pruned = outcome.study.trials[2]
    assert list(pruned.intermediate_values) == [0]
    assert pruned.user_attrs["stopped_reason"] == "callback" and pruned.user_attrs["epochs_run"] == 1


def test_a_trial_that_raises_is_failed_with_its_reason_and_the_next_trial_still_runs(study_run):
    _, outcome, *_ = study_run
    failed = outcome.study.trials[1]
    assert failed.user_attrs["fail_reason"].startswith("ValueError: Optimizer") and "not found" in failed.user_attrs["fail_reason"]
    assert outcome.study.trials[2].state != TrialState.FAIL
    assert tuning.count_finished(outcome.study) == 3  # a failure counts towards n_trials


def test_every_trial_is_a_nested_mlflow_run_with_its_parameters_curves_and_state(study_run):
    _, outcome, parent_id, uri, _ = study_run
    client = MlflowClient(tracking_uri=uri)
    parent = client.get_run(parent_id)
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")
    runs = {int(run.data.tags["trial_number"]): run for run in children}
    assert sorted(runs) == [0, 1, 2]
    assert [runs[n].data.tags["trial_state"] for n in range(3)] == ["complete", "failed", "pruned"]
    assert [runs[n].info.status for n in range(3)] == ["FINISHED", "FAILED", "FINISHED"]
    assert runs[1].data.tags["fail_reason"] == outcome.study.trials[1].user_attrs["fail_reason"]
    assert runs[2].data.params["train.optimizer"] == "adam" and float(runs[2].data.params["train.lr"]) == HOPELESS
    assert len(client.get_metric_history(runs[0].info.run_id, "epoch/val_macro_f1")) == 2
    assert runs[0].data.metrics["objective"] == outcome.study.trials[0].value
    assert [m.step for m in client.get_metric_history(parent_id, "trial_value")] == [0]


def test_trials_train_in_their_own_folders_under_the_study(study_run):
    plan, outcome, *_, models_root = study_run
    folder = models_root / "tune" / plan.study_name / "satellite_cnn" / outcome.study.trials[0].user_attrs["run_name"]
    assert (folder / "best.pt").is_file()
    assert not (models_root / "satellite_cnn").exists()  # the family's own runs are left alone


def test_the_best_parameters_file_loads_as_the_familys_parameters(study_run):
    plan, outcome, *_ = study_run
    best = tuning.best_params_file(outcome.study, plan)
    assert best == {"satellite_cnn": {"train": {"lr": GOOD, "optimizer": "adam"}}}
    block, defaults = family_layers("satellite_cnn", tiny_overrides("satellite_cnn"))
    params = families.resolve("satellite_cnn", deep_merge(block, best["satellite_cnn"]), *defaults)
    assert params["train"]["lr"] == GOOD and params["train"]["optimizer"] == "adam"


def test_the_report_names_the_best_trial_and_counts_the_states(study_run):
    plan, outcome, *_ = study_run
    report = tuning.study_report(outcome.study, plan)
    assert report["best"]["number"] == 0 and math.isclose(report["best"]["value"], outcome.study.best_value)
    assert report["states"] == {"complete": 1, "pruned": 1, "failed": 1, "running": 0, "waiting": 0}
    assert [row["state"] for row in report["trials"]] == ["complete", "failed", "pruned"]
    assert report["objective"] == {"monitor": "val_macro_f1", "direction": "maximize"}


def test_with_one_completed_trial_the_importance_plot_says_why_it_is_empty(study_run):
    _, outcome, *_ = study_run
    figures = tuning.study_plots(outcome.study)
    assert list(figures) == ["optimization_history", "param_importances", "parallel_coordinates"]
    texts = [t.get_text() for ax in figures["param_importances"].axes for t in ax.texts]
    assert any("at least 2 completed trials" in text for text in texts)
    assert figures["optimization_history"].axes and figures["optimization_history"].axes[0].lines


def test_a_study_already_at_n_trials_runs_no_more(study_run, data):
    plan, outcome, *_, models_root = study_run
    again = tuning.run_study(plan, *data, models_root)
    assert len(again.study.trials) == 3
