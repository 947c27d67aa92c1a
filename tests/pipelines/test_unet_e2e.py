"""End to end: `kedro run --pipeline unet_mim` then `unet_seg` from its checkpoint, on tiny labelled scenes."""

import json

import pytest
from corpus import write_hdf5_cube
from series_corpus import write_series

from spectral_training.io.versioned import latest_version

pytestmark = [pytest.mark.e2e, pytest.mark.slow]  # ~30-60 s on 2 busy cores: `make test-all`

DATA = ("dataset=tiny,ingestion.tile_size=16,ingestion.stride=16,ingestion.show_progress=false,"
        "normalisation_stats.show_progress=false,validation.steps=2")


def _tiny(family: str, extra: str = "") -> str:
    return (f"{DATA},{family}.model.decoder_channels=[8],{family}.train.epochs=1,{family}.train.warmup_epochs=0,"
            f"{family}.train.progress=false,{family}.loader.batch_size=8,{family}.loader.num_workers=0,"
            f"{family}.evaluation.show_progress=false,{family}.evaluation.plot_samples=2" + (f",{extra}" if extra else ""))


def test_unet_mim_then_unet_seg_from_its_encoder(kedro_project):
    raw = kedro_project.raw("tiny")
    for i in range(3):
        write_hdf5_cube(raw / f"scene{i}.h5", (6, 32, 32), with_labels=True, seed=i)
    mim = kedro_project.kedro("run", "--pipeline", "unet_mim", "--params", _tiny("unet_mim"))
    assert mim.returncode == 0, mim.stdout[-3000:] + mim.stderr[-3000:]
    metrics = json.loads(latest_version(kedro_project.path(
        "data/08_reporting/tiny/unet_mim/reconstruction_metrics.json")).read_text())
    assert set(metrics["summary"]) == {"model", "band_mean", "neighbour_patch"}
    seg = kedro_project.kedro("run", "--pipeline", "unet_seg", "--params", _tiny(
        "unet_seg", "unet_seg.model.checkpoint=data/06_models/tiny/unet_mim_model.json"))
    assert seg.returncode == 0, seg.stdout[-3000:] + seg.stderr[-3000:]
    report = json.loads(latest_version(kedro_project.path(
        "data/08_reporting/tiny/unet_seg/segmentation_metrics.json")).read_text())
    assert report["init"] == "unet_mim" and 0.0 <= report["pixel_accuracy"] <= 1.0
    assert latest_version(kedro_project.path("data/08_reporting/tiny/unet_seg/segmentation_masks.png")).is_file()


def test_unet_temporal_on_a_series_dataset_against_both_baselines(kedro_project):
    raw = kedro_project.raw("tiny_series")
    dates = ("2021-03-01", "2021-04-10", "2021-05-20", "2021-07-01", "2021-08-15")
    for i in range(4):
        write_series(raw / f"site{i}.h5", dates, bands=4, size=32, seed=i)
    params = ("dataset=tiny_series,ingestion.show_progress=false,normalisation_stats.show_progress=false,"
              "validation.steps=2,unet_temporal.model.decoder_channels=[8],unet_temporal.train.epochs=1,"
              "unet_temporal.train.warmup_epochs=0,unet_temporal.train.progress=false,"
              "unet_temporal.loader.batch_size=8,unet_temporal.loader.num_workers=0,"
              "unet_temporal.evaluation.show_progress=false,unet_temporal.evaluation.plot_samples=2")
    run = kedro_project.kedro("run", "--pipeline", "unet_temporal", "--params", params)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    reports = "data/08_reporting/tiny_series/unet_temporal"
    metrics = json.loads(latest_version(kedro_project.path(f"{reports}/temporal_metrics.json")).read_text())
    assert set(metrics["summary"]) == {"model", "persistence", "linear_interpolation"}
    assert metrics["scored_pixels"] > 0
    assert latest_version(kedro_project.path(f"{reports}/temporal_prediction.png")).is_file()
