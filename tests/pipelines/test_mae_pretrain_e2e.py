"""End to end: `kedro run --pipeline mae_pretrain` on a tiny dataset, and its pre-flight refusal."""

import json

import pandas as pd
import pytest
import torch
from corpus import write_hdf5_cube

pytestmark = pytest.mark.e2e

TINY_MODEL = (
    "dataset=tiny,ingestion.tile_size=16,ingestion.stride=8,ingestion.show_progress=false,"
    "normalisation_stats.show_progress=false,mae.model.image_size=16,mae.model.spatial_patch=4,mae.model.spectral_patch=3,"
    "mae.model.depth=2,mae.model.embed_dim=32,mae.model.num_heads=2,mae.model.decoder_embed_dim=32,mae.model.decoder_depth=1,"
    "mae.model.decoder_num_heads=2,"
    "mae.train.epochs=3,mae.train.warmup_epochs=1,mae.train.progress=false,mae.train.checkpoint_every_steps=2,"
    "mae.loader.batch_size=4,validation.steps=3"
)


def _tiny_raw(kedro_project):
    raw = kedro_project.raw("tiny")
    for i in range(3):
        write_hdf5_cube(raw / f"scene{i}.h5", (6, 32, 32), wavelengths=[450, 500, 550, 600, 650, 700], seed=i)


def test_mae_pretrain_runs_end_to_end_evaluates_and_tracks_one_mlflow_run(kedro_project):
    _tiny_raw(kedro_project)
    run = kedro_project.kedro("run", "--pipeline", "mae_pretrain", "--params", TINY_MODEL)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    _check_checkpoint_and_history(kedro_project)
    _check_evaluation(kedro_project)
    _check_mlflow_run(kedro_project)


def _check_evaluation(kedro_project):
    metrics = json.loads(kedro_project.artifact("data/08_reporting/tiny/reconstruction_metrics.json").read_text())
    assert set(metrics["summary"]) == {"model", "band_mean", "neighbour_patch"}
    assert metrics["band_names"] == [f"band_{i:03d}" for i in range(6)] and metrics["data_version"]
    assert len(metrics["model"]["per_band"]["mse"]) == 6
    for plot in ("reconstruction_grid", "error_per_band", "spectra", "loss_curves"):
        assert kedro_project.artifact(f"data/08_reporting/tiny/{plot}.png").stat().st_size > 5000


def _check_mlflow_run(kedro_project):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{kedro_project.path('mlflow.db')}")
    [experiment] = [e for e in client.search_experiments() if e.name == "spectral_training"]
    [mlflow_run] = client.search_runs([experiment.experiment_id])
    assert mlflow_run.info.status == "FINISHED"
    assert mlflow_run.data.params["mae.model.variant"] == "tiny" and mlflow_run.data.params["mae.train.epochs"] == "3"
    assert mlflow_run.data.tags["data_version"] and mlflow_run.data.tags["stopped_reason"] == "completed"
    index = pd.read_parquet(kedro_project.path("data/02_intermediate/tiny/sample_index.parquet"))
    steps_per_epoch = int((index.split == "train").sum()) // 4  # batch 4, last partial batch dropped
    steps = client.get_metric_history(mlflow_run.info.run_id, "step/train_loss")
    assert sorted(m.step for m in steps) == list(range(1, 3 * steps_per_epoch + 1))
    assert len(client.get_metric_history(mlflow_run.info.run_id, "epoch/val_loss")) == 3
    assert {"eval.model/mse", "eval.band_mean/mse", "eval.neighbour_patch/ssim"} <= set(mlflow_run.data.metrics)
    artifacts = {a.path for folder in ("plots", "reports", "model", "config", "data")
                 for a in client.list_artifacts(mlflow_run.info.run_id, folder)}
    assert {"plots/reconstruction_grid.png", "reports/reconstruction_metrics.json", "model/best.pt",
            "config/resolved_parameters.json", "data/band_stats.json"} <= artifacts


def _check_checkpoint_and_history(kedro_project):
    report = json.loads(kedro_project.artifact("data/08_reporting/tiny/transform_report.json").read_text())
    assert report["passed"]
    manifest = json.loads(kedro_project.artifact("data/06_models/tiny/mae_model.json").read_text())
    assert manifest["stopped_reason"] == "completed" and manifest["epochs_run"] == 3
    checkpoint = torch.load(kedro_project.path(manifest["best_checkpoint"]), weights_only=True)
    assert checkpoint["metadata"]["band_names"] == [f"band_{i:03d}" for i in range(6)]
    assert checkpoint["metadata"]["wavelengths_nm"] == [450, 500, 550, 600, 650, 700]
    assert len(checkpoint["metadata"]["band_stats"]["mean"]) == 6
    history = json.loads(kedro_project.artifact("data/08_reporting/tiny/mae_history.json").read_text())
    assert len(history) == 3 and all(h["train_loss"] > 0 for h in history)


def test_a_resize_that_does_not_fit_the_model_stops_the_run_before_training(kedro_project):
    _tiny_raw(kedro_project)
    kedro_project.path("conf/local/parameters.yml").write_text("mae:\n  transforms:\n    train: [{resize: 32}]\n    eval: []\n")
    run = kedro_project.kedro("run", "--pipeline", "mae_pretrain", "--params", TINY_MODEL)
    assert run.returncode != 0
    output = run.stdout + run.stderr
    assert "mae.transforms.train[0].resize=32" in output and "mae.model.image_size" in output
    report = json.loads(kedro_project.artifact("data/08_reporting/tiny/transform_report.json").read_text())
    assert not report["passed"]
    assert not kedro_project.path("data/06_models/tiny/mae_model.json").exists()


def test_a_training_killed_with_sigkill_resumes_from_its_checkpoint_into_the_same_mlflow_run(kedro_project):
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from mlflow.tracking import MlflowClient

    _tiny_raw(kedro_project)
    params = TINY_MODEL.replace("mae.train.epochs=3", "mae.train.epochs=6").replace("checkpoint_every_steps=2", "checkpoint_every_steps=1")
    command = [str(Path(sys.executable).with_name("kedro")), "run", "--pipeline", "mae_pretrain", "--params", params]
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true", "MPLBACKEND": "Agg"}
    runs_root = kedro_project.path("data/06_models/tiny/mae")  # <models_root>/<family>
    with open(kedro_project.path("first_run.log"), "w") as log:
        first = subprocess.Popen(command, cwd=kedro_project.root, env=env, stdout=log, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, start_new_session=True)
    killed_at = None
    deadline = time.time() + 240
    while time.time() < deadline and first.poll() is None:
        checkpoints = list(runs_root.glob("*/last.pt"))
        if list(runs_root.glob("*/unfinished_run.json")) and checkpoints:
            try:
                progress = torch.load(checkpoints[0], weights_only=True)["progress"]
            except Exception:  # being replaced right now
                progress = {"global_step": 0}
            if progress["global_step"] >= 4:
                os.killpg(first.pid, signal.SIGKILL)
                killed_at = progress["global_step"]
                break
        time.sleep(0.2)
    first.wait(timeout=60)
    assert killed_at is not None, kedro_project.path("first_run.log").read_text()[-3000:]
    [marker_file] = runs_root.glob("*/unfinished_run.json")  # in the killed run's folder
    marker = json.loads(marker_file.read_text())

    second = kedro_project.kedro("run", "--pipeline", "mae_pretrain", "--params", params)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    manifest = json.loads(kedro_project.artifact("data/06_models/tiny/mae_model.json").read_text())
    assert manifest["resumed"] and manifest["stopped_reason"] == "completed" and manifest["epochs_run"] == 6
    assert not list(runs_root.glob("*/unfinished_run.json"))

    client = MlflowClient(tracking_uri=f"sqlite:///{kedro_project.path('mlflow.db')}")
    [experiment] = [e for e in client.search_experiments() if e.name == "spectral_training"]
    [mlflow_run] = client.search_runs([experiment.experiment_id])  # one run, continued
    assert mlflow_run.info.run_id == marker["mlflow_run_id"] and mlflow_run.info.status == "FINISHED"
    steps = {m.step for m in client.get_metric_history(mlflow_run.info.run_id, "step/train_loss")}
    assert max(steps) == manifest["steps"] and min(steps) == 1
