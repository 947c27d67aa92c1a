"""End to end: `kedro run --pipeline unet_mim` then `unet_seg` from its checkpoint, on tiny labelled scenes."""

import json

import pytest
from corpus import write_hdf5_cube

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
