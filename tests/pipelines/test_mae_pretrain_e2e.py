"""End to end: `kedro run --pipeline mae_pretrain` on a tiny dataset, and its pre-flight refusal."""

import json

import pytest
import torch
from corpus import write_hdf5_cube

pytestmark = pytest.mark.e2e

TINY_MODEL = (
    "dataset=tiny,ingestion.tile_size=16,ingestion.stride=8,ingestion.show_progress=false,"
    "normalisation_stats.show_progress=false,model.image_size=16,model.spatial_patch=4,model.spectral_patch=3,"
    "model.depth=2,model.embed_dim=32,model.num_heads=2,model.decoder_embed_dim=32,model.decoder_depth=1,"
    "model.decoder_num_heads=2,"
    "train.epochs=3,train.warmup_epochs=1,train.progress=false,train.checkpoint_every_steps=2,"
    "loader.batch_size=4,validation.steps=3"
)


def _tiny_raw(kedro_project):
    raw = kedro_project.raw("tiny")
    for i in range(3):
        write_hdf5_cube(raw / f"scene{i}.h5", (6, 32, 32), wavelengths=[450, 500, 550, 600, 650, 700], seed=i)


def test_mae_pretrain_runs_end_to_end_and_writes_a_loadable_checkpoint(kedro_project):
    _tiny_raw(kedro_project)
    run = kedro_project.kedro("run", "--pipeline", "mae_pretrain", "--params", TINY_MODEL)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    report = json.loads(kedro_project.path("data/08_reporting/tiny/transform_report.json").read_text())
    assert report["passed"]
    manifest = json.loads(kedro_project.path("data/06_models/tiny/mae_model.json").read_text())
    assert manifest["stopped_reason"] == "completed" and manifest["epochs_run"] == 3
    checkpoint = torch.load(kedro_project.path(manifest["best_checkpoint"]), weights_only=True)
    assert checkpoint["metadata"]["band_names"] == [f"band_{i:03d}" for i in range(6)]
    assert checkpoint["metadata"]["wavelengths_nm"] == [450, 500, 550, 600, 650, 700]
    assert len(checkpoint["metadata"]["band_stats"]["mean"]) == 6
    history = json.loads(kedro_project.path("data/08_reporting/tiny/mae_history.json").read_text())
    assert len(history) == 3 and all(h["train_loss"] > 0 for h in history)


def test_a_resize_that_does_not_fit_the_model_stops_the_run_before_training(kedro_project):
    _tiny_raw(kedro_project)
    kedro_project.path("conf/local/parameters.yml").write_text("transforms:\n  train: [{resize: 32}]\n  eval: []\n")
    run = kedro_project.kedro("run", "--pipeline", "mae_pretrain", "--params", TINY_MODEL)
    assert run.returncode != 0
    output = run.stdout + run.stderr
    assert "transforms.train[0].resize=32" in output and "model.image_size" in output
    report = json.loads(kedro_project.path("data/08_reporting/tiny/transform_report.json").read_text())
    assert not report["passed"]
    assert not kedro_project.path("data/06_models/tiny/mae_model.json").exists()
