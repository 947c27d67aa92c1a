"""The Kedro `data` pipeline (ingestion + normalisation_stats) on the broken-file corpus, in process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from corpus import write_broken_files, write_hdf5_cube
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from spectral_training.cubes.store import CubeStore
from spectral_training.io import CubeStoreDataset, RawFolderDataset
from spectral_training.pipelines import ingestion, normalisation_stats

CONF = Path(__file__).resolve().parents[2] / "conf" / "base"
SHAPE = (4, 16, 16)


class _KeptMemoryDataset(MemoryDataset):
    """A MemoryDataset the runner does not empty after its last consumer, so the test can read it."""

    def _release(self) -> None:
        pass


def _params(name: str, **overrides) -> dict:
    return {**yaml.safe_load((CONF / f"parameters_{name}.yml").read_text())[name], **overrides}


@pytest.fixture(scope="module")
def data_run(tmp_path_factory):
    """Two good scenes (one bright, one dark, so every split's figures differ) and every broken file."""
    tmp = tmp_path_factory.mktemp("data")
    raw = tmp / "01_raw" / "scene"
    raw.mkdir(parents=True)
    write_hdf5_cube(raw / "dark.h5", SHAPE, seed=1)
    bright = write_hdf5_cube(raw / "bright.h5", SHAPE, seed=2).path
    import h5py

    with h5py.File(bright, "r+") as h5:
        h5["cube"][...] = h5["cube"][...] * 3.0 + 100.0
    expected = write_broken_files(raw, SHAPE)
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in raw.iterdir()}
    catalog = DataCatalog({
        "raw_cubes": RawFolderDataset(str(raw)),
        "cube_store": CubeStoreDataset(filepath=str(tmp / "cubes.h5")),
        "params:dataset": MemoryDataset("scene"),
        "params:ingestion": MemoryDataset(_params("ingestion", tile_size=4, stride=4, show_progress=False)),
        "params:normalisation_stats": MemoryDataset(_params("normalisation_stats", show_progress=False)),
        **{name: _KeptMemoryDataset(copy_mode="assign")
           for name in ("ingestion_plan", "sample_index", "ingestion_report", "band_stats")},
    })
    SequentialRunner().run(ingestion.create_pipeline() + normalisation_stats.create_pipeline(), catalog)
    outputs = {name: catalog.load(name) for name in ("sample_index", "ingestion_report", "band_stats")}
    return {"raw": raw, "expected": expected, "before": before, "store": CubeStore(tmp / "cubes.h5"), **outputs}


def test_broken_corpus_every_file_reported_by_name_and_reason_good_ones_ingested_raw_untouched(data_run):
    """Promise: through the ingestion pipeline, every broken file of the corpus is in the report's
    `rejected` with its name and a reason that says what is wrong, the good files are ingested whole,
    and every raw file keeps its bytes and its mtime."""
    report, expected = data_run["ingestion_report"], data_run["expected"]
    reasons = {entry["file"]: entry["reason"] for entry in report["rejected"]}
    assert set(reasons) == set(expected)
    for name, fragment in expected.items():
        assert fragment.lower() in reasons[name].lower(), (name, reasons[name])
    assert sorted(entry["file"] for entry in report["ingested"]) == ["bright.h5", "dark.h5"]
    assert len(data_run["store"]) == len(data_run["sample_index"]) == 2 * 16  # 16 tiles of 4 px per scene
    raw = data_run["raw"]
    assert data_run["before"] == {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in raw.iterdir()}


def test_statistics_node_uses_the_train_split_only(data_run):
    """Promise: the band statistics are those of the train split alone; here val and test tiles hold
    other values, so statistics over every split would differ."""
    index, stats, store = data_run["sample_index"], data_run["band_stats"], data_run["store"]
    train = index.loc[index.split == "train", "store_index"].to_numpy()
    held_out = index.loc[index.split != "train", "store_index"].to_numpy()
    assert len(train) and len(held_out)
    values = store.read(np.sort(np.concatenate([train, held_out]))).astype(np.float64)
    train_values = store.read(np.sort(train)).astype(np.float64)
    # 1e-6: the accuracy promised (rows summed in float32, merged in float64; tests/cubes/test_stats.py)
    np.testing.assert_allclose(stats["mean"], train_values.mean(axis=(0, 2, 3)), rtol=1e-6)
    np.testing.assert_allclose(stats["std"], train_values.std(axis=(0, 2, 3)), rtol=1e-6)
    assert np.abs(np.array(stats["mean"]) - values.mean(axis=(0, 2, 3))).min() > 1e-3
    assert [band["count"] for band in stats["bands"]] == [len(train) * 16] * SHAPE[0]
