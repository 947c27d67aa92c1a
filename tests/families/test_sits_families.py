"""The SITS families on a tiny labelled series store, through the shared runner: joint masked
pretraining scored against the per-pixel temporal mean, then SITS-Former classification from
its encoder (class weights from the train split, the evaluation's report, numbers and plots)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from spectral_training.cubes.ingest import build_sample_index
from spectral_training.cubes.stats import compute_band_stats
from spectral_training.cubes.store import CubeStore, TileBatch
from spectral_training.families import get_family, resolve
from spectral_training.families.checkpoint_reference import resolve_checkpoint
from spectral_training.families.params import FamilyParamsError
from spectral_training.families.runs import train_family
from family_data import family_layers

TINY_MODEL = {"embed_dim": 16, "num_layers": 1, "num_heads": 2, "patch_size": 4}
TINY_RUN = {"loader": {"batch_size": 8, "num_workers": 0},
            "train": {"epochs": 2, "progress": False, "checkpoint_every_steps": None, "warmup_epochs": 0},
            "evaluation": {"show_progress": False, "batch_size": 8}}
DAYS = np.array([40, 90, 140, 190, 240, 290])


def _labelled_series_store(folder, per_class=(16, 10, 8), bands=4, tile=8):
    """Three classes that share one spectrum and differ by the day their season peaks (as crops do),
    unbalanced so that the class weights matter; 20 % of the pixels clouded."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(len(per_class)), per_class)
    n, t = len(labels), len(DAYS)
    peak = np.array([100.0, 170.0, 240.0])[labels]
    season = np.exp(-(((DAYS[None, :] - peak[:, None]) / 40.0) ** 2))  # (n, t)
    series = 1.0 + season[:, :, None, None, None] * np.linspace(0.5, 1.5, bands)[None, None, :, None, None]
    series = series + 0.05 * rng.normal(size=(n, t, bands, tile, tile))
    valid = rng.random((n, t, tile, tile)) > 0.2
    store = CubeStore(folder / "cubes.h5")
    store.create(num_bands=bands, tile_size=tile, band_names=["B02", "B03", "B04", "B08"],
                 wavelengths_nm=[490.0, 560.0, 665.0, 842.0], class_names=["wheat", "maize", "grass"],
                 sample_layout="series", max_seq_len=t)
    store.append([TileBatch(cubes=(series * valid[:, :, None]).astype("f4"), sample_ids=[f"s{i}@0,0" for i in range(n)],
                            source_file="synthetic", windows=np.zeros((n, 4), np.int32), labels=labels,
                            day_of_year=np.tile(DAYS, (n, 1)).astype(np.int16), date_mask=np.ones((n, t), bool),
                            valid=valid)])
    index = build_sample_index(store, {"train": 0.5, "val": 0.25, "test": 0.25})
    train = index.loc[index["split"] == "train", "store_index"].to_numpy()
    return store, index, compute_band_stats(store, train, show_progress=False)


def _params(family: str, model: dict | None = None) -> dict:
    block, defaults = family_layers(family, {**TINY_RUN, "model": {**TINY_MODEL, **(model or {})}})
    return resolve(family, block, defaults[0])


@pytest.fixture(scope="module")
def series_data(tmp_path_factory):
    return _labelled_series_store(tmp_path_factory.mktemp("sits"))


@pytest.fixture(scope="module")
def pretrained(series_data, tmp_path_factory):
    """A sits_pretrain run on every series and its evaluation."""
    store, index, stats = series_data
    family, params = get_family("sits_pretrain"), _params("sits_pretrain")
    setup = family.prepare(store, index, stats, params)
    run = train_family(family, setup, params, tmp_path_factory.mktemp("models"), device="cpu")
    return family, params, run, family.evaluate(store, index, stats, run.manifest, params, run.result.history)


def test_pretraining_reconstructs_hidden_blocks_and_is_scored_against_the_temporal_mean(pretrained):
    family, _, run, (report, values, figures) = pretrained
    assert [h["epoch"] for h in run.result.history] == [0, 1]
    assert set(report["masked_mse"]) == {"model", "temporal_mean"} and report["scored_values"] > 0
    assert len(report["per_band_mse"]["model"]) == 4 and report["band_names"] == ["B02", "B03", "B04", "B08"]
    assert set(values) == {"masked_mse/model", "masked_mse/temporal_mean"}
    assert set(figures) == set(family.plot_names)


def test_the_classifier_starts_from_the_pretrained_encoder_and_reports_every_metric(series_data, pretrained,
                                                                                     tmp_path):
    store, index, stats = series_data
    _, _, pretrain_run, _ = pretrained
    manifest = tmp_path / "sits_pretrain_model.json"
    manifest.write_text(json.dumps(pretrain_run.manifest))
    family = get_family("sits_former")
    params = _params("sits_former", {"pretrained": str(manifest)})
    setup = family.prepare(store, index, stats, params)
    model = family.build_model(setup.model_kwargs)
    state = torch.load(pretrain_run.manifest["best_checkpoint"], weights_only=True)["model"]
    encoder = {k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")}
    assert set(model.state_dict()) - set(encoder) == {k for k in model.state_dict() if k.startswith("head.")}
    assert all(torch.equal(model.state_dict()[k], value) for k, value in encoder.items())

    run = train_family(family, setup, params, tmp_path / "models", device="cpu")
    report, values, figures = family.evaluate(store, index, stats, run.manifest, params, run.result.history)
    assert report["pretrained_checkpoint"] == pretrain_run.manifest["best_checkpoint"]
    assert report["class_names"] == ["wheat", "maize", "grass"]
    assert np.asarray(report["confusion_matrix"]).sum() == report["num_samples"] == int((index["split"] == "test").sum())
    assert 0.0 <= report["accuracy"] <= 1.0 and 0.0 <= report["macro_f1"] <= 1.0
    assert set(report["per_class"]) == {"wheat", "maize", "grass"}
    assert {"accuracy", "macro_f1"} <= set(values)
    assert set(figures) == set(family.plot_names)


def test_class_weights_are_total_over_classes_times_count_on_the_train_split(series_data):
    store, index, stats = series_data
    setup = get_family("sits_former").prepare(store, index, stats, _params("sits_former"))
    counts = np.bincount(index.loc[index["split"] == "train", "label"].to_numpy(dtype=int), minlength=3)
    assert (counts > 0).all() and len(set(counts)) > 1  # unbalanced, every class present
    expected = counts.sum() / (3 * counts)
    assert setup.extra["class_weights"] == pytest.approx(expected.tolist())


def test_a_cube_store_is_refused_naming_the_series_dataset(tmp_path):
    store = CubeStore(tmp_path / "cubes.h5")
    store.create(num_bands=4, tile_size=8, band_names=None, wavelengths_nm=None)
    for name in ("sits_former", "sits_pretrain"):
        with pytest.raises(FamilyParamsError, match="series dataset"):
            get_family(name).prepare(store, None, {}, _params(name))


def test_a_missing_pretraining_checkpoint_names_the_pipeline_that_makes_one(series_data, tmp_path):
    store, index, stats = series_data
    params = _params("sits_former", {"pretrained": str(tmp_path / "sits_pretrain_model.json")})
    with pytest.raises(FileNotFoundError, match="kedro run --pipeline sits_pretrain"):
        get_family("sits_former").prepare(store, index, stats, params)


def test_a_versioned_manifest_resolves_to_its_newest_versions_checkpoint(tmp_path):
    manifest = tmp_path / "sits_pretrain_model.json"  # a Kedro versioned dataset: a folder of versions
    for version, run in (("2026-12-01T10.00.00.000Z", "old"), ("2026-12-02T10.00.00.000Z", "new")):
        (tmp_path / run).mkdir()
        (tmp_path / run / "best.pt").write_bytes(b"")
        (manifest / version).mkdir(parents=True)
        (manifest / version / manifest.name).write_text(json.dumps({"best_checkpoint": str(tmp_path / run / "best.pt")}))
    path = resolve_checkpoint(manifest, where="sits_former.model.pretrained", family="sits_pretrain")
    assert path == tmp_path / "new" / "best.pt"
    assert resolve_checkpoint(tmp_path / "old", where="x", family="sits_pretrain") == tmp_path / "old" / "best.pt"
