"""End to end: `kedro run --pipeline sits_pretrain`, then `--pipeline sits` from its model manifest,
on tiny labelled series (class sub-folders), with every artifact versioned."""

import json

import pytest
from series_corpus import write_series

from spectral_training.io.versioned import all_versions, latest_version

pytestmark = pytest.mark.e2e

DATES = ("2021-03-01", "2021-04-10", "2021-05-20", "2021-07-01", "2021-08-15")
DATA = "dataset=tiny_series,ingestion.show_progress=false,normalisation_stats.show_progress=false,validation.steps=2"


def _tiny(family: str, extra: str = "") -> str:
    return (f"{DATA},{family}.model.embed_dim=16,{family}.model.num_layers=1,{family}.model.num_heads=2,"
            f"{family}.train.epochs=1,{family}.train.warmup_epochs=0,{family}.train.progress=false,"
            f"{family}.loader.batch_size=8,{family}.loader.num_workers=0,{family}.evaluation.show_progress=false"
            + (f",{extra}" if extra else ""))


def test_sits_pretrain_then_sits_from_its_manifest(kedro_project):
    raw = kedro_project.raw("tiny_series")
    for k, crop in enumerate(("maize", "wheat")):
        (raw / crop).mkdir()
        for i in range(2):
            write_series(raw / crop / f"site{i}.h5", DATES, bands=4, size=32, seed=10 * k + i)
    pretrain = kedro_project.kedro("run", "--pipeline", "sits_pretrain", "--params", _tiny("sits_pretrain"))
    assert pretrain.returncode == 0, pretrain.stdout[-3000:] + pretrain.stderr[-3000:]
    reports = kedro_project.path("data/08_reporting/tiny_series")
    masked = json.loads(latest_version(reports / "sits_pretrain/reconstruction_metrics.json").read_text())
    assert set(masked["masked_mse"]) == {"model", "temporal_mean"} and masked["scored_values"] > 0

    manifest = "data/06_models/tiny_series/sits_pretrain_model.json"  # versioned: the newest is read
    classify = kedro_project.kedro("run", "--pipeline", "sits", "--params",
                                   _tiny("sits_former", f"sits_former.model.pretrained={manifest}"))
    assert classify.returncode == 0, classify.stdout[-3000:] + classify.stderr[-3000:]
    report = json.loads(latest_version(reports / "sits/classification_metrics.json").read_text())
    pretrained = json.loads(latest_version(kedro_project.path(manifest)).read_text())
    assert report["pretrained_checkpoint"] == (pretrained["best_checkpoint"] or pretrained["last_checkpoint"])
    assert report["class_names"] == ["maize", "wheat"] and 0.0 <= report["accuracy"] <= 1.0
    for plot in ("confusion_matrix", "class_curves", "date_attention", "loss_curves", "metric_curves"):
        assert len(all_versions(reports / f"sits/{plot}.png")) == 1, plot
