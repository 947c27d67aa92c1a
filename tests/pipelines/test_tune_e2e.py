"""End to end: `kedro run --pipeline tune` on a tiny dataset: a 2-trial study with a pruned trial,
its report, best parameters and plots on disk and in MLflow, trials as nested MLflow runs, and
the same command resuming the study to a larger n_trials."""

import json

import optuna
import pytest
from corpus import write_class_folders
import yaml
from mlflow.tracking import MlflowClient

from spectral_training import families
from spectral_training.families.params import deep_merge

pytestmark = pytest.mark.e2e

PARAMS = ("dataset=tiny,ingestion.tile_size=16,ingestion.stride=16,ingestion.show_progress=false,"
          "normalisation_stats.show_progress=false,validation.steps=3,family=satellite_cnn,"
          "satellite_cnn.train.progress=false,satellite_cnn.train.warmup_epochs=0,"
          "satellite_cnn.evaluation.show_progress=false,"
          "tune.epochs=2,tune.pruner.n_startup_trials=1,tune.pruner.n_warmup_steps=0")

# The first two trials are queued: one that learns and one whose lr is too small to learn anything,
# so the median pruner (one finished trial, no warm-up) prunes the second at its first epoch.
LOCAL_TUNE = """
tune:
  enqueue:
    - {train.lr: 1.0e-2, train.optimizer: adam, train.weight_decay: 1.0e-4, model.drop_rate: 0.0, loader.batch_size: 8}
    - {train.lr: 1.0e-7, train.optimizer: adam, train.weight_decay: 1.0e-4, model.drop_rate: 0.0, loader.batch_size: 8}
tune_satellite_cnn:
  space:
    lr: {low: 1.0e-7}
"""


def test_a_tune_run_studies_the_family_reports_tracks_and_resumes(kedro_project):
    write_class_folders(kedro_project.raw("tiny"))
    (kedro_project.path("conf", "local", "parameters_tune.yml")).write_text(LOCAL_TUNE)
    run = kedro_project.kedro("run", "--pipeline", "tune", "--params", f"{PARAMS},tune.n_trials=2")
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]

    reports = "data/08_reporting/tiny/tune/satellite_cnn"
    report = json.loads(kedro_project.artifact(reports, "report.json").read_text())
    assert report["study_name"] == "satellite_cnn-tiny" and report["best"]["number"] == 0
    assert [(t["number"], t["state"]) for t in report["trials"]] == [(0, "complete"), (1, "pruned")]
    for plot in ("optimization_history", "param_importances", "parallel_coordinates"):
        assert kedro_project.artifact(reports, f"{plot}.png").stat().st_size > 5000
    best = yaml.safe_load(kedro_project.artifact(reports, "best_params.yml").read_text())
    assert best == {"satellite_cnn": {"train": {"lr": 0.01, "optimizer": "adam", "weight_decay": 1e-4},
                                      "model": {"drop_rate": 0.0}, "loader": {"batch_size": 8}}}
    _loads_as_the_familys_parameters(kedro_project, best)
    trials = json.loads(kedro_project.artifact("data/07_model_output/tiny/tune/satellite_cnn/trials.json").read_text())
    assert [t["state"] for t in trials] == ["complete", "pruned"]
    _check_mlflow(kedro_project, states=["complete", "pruned"])

    again = kedro_project.kedro("run", "--pipeline", "tune", "--params", f"{PARAMS},tune.n_trials=3")
    assert again.returncode == 0, again.stdout[-4000:] + again.stderr[-4000:]
    study = optuna.load_study(study_name="satellite_cnn-tiny",
                              storage=f"sqlite:///{kedro_project.path('data/07_model_output/optuna.db')}")
    assert len(study.trials) == 3 and study.trials[2].state.is_finished()
    report = json.loads(kedro_project.artifact(reports, "report.json").read_text())  # the newest version
    assert len(report["trials"]) == 3 and report["n_trials_requested"] == 3


def _loads_as_the_familys_parameters(kedro_project, best: dict) -> None:
    conf = kedro_project.path("conf", "base")
    load = lambda path, key: yaml.safe_load((conf / path).read_text())[key]  # noqa: E731
    block = load("parameters/families/satellite_cnn.yml", "satellite_cnn")
    defaults = [load("parameters_training_defaults.yml", "training_defaults"),
                load("parameters/families/_classifier_defaults.yml", "classifier_defaults")]
    params = families.resolve("satellite_cnn", deep_merge(block, best["satellite_cnn"]), *defaults)
    assert params["train"]["lr"] == 0.01 and params["loader"]["batch_size"] == 8


def _check_mlflow(kedro_project, states: list[str]) -> None:
    client = MlflowClient(tracking_uri=f"sqlite:///{kedro_project.path('mlflow.db')}")
    [experiment] = [e for e in client.search_experiments() if e.name == "spectral_training"]
    runs = client.search_runs([experiment.experiment_id])
    [parent] = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = sorted((r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id),
                      key=lambda r: int(r.data.tags["trial_number"]))
    assert parent.data.tags["study"] == "satellite_cnn-tiny" and parent.data.tags["family"] == "satellite_cnn"
    assert [r.data.tags["trial_state"] for r in children] == states
    assert [float(r.data.params["train.lr"]) for r in children] == [1e-2, 1e-7]
    assert len(client.get_metric_history(children[0].info.run_id, "epoch/val_macro_f1")) == 2
    assert parent.data.metrics["tune.trials_pruned"] == 1 and "tune.best_value" in parent.data.metrics
    artifacts = {a.path for folder in ("tune", "tune/plots") for a in client.list_artifacts(parent.info.run_id, folder)}
    assert {"tune/report.json", "tune/best_params.yml", "tune/plots/param_importances.png"} <= artifacts
