"""The diagnostics report: what is healthy, what is missing and how to produce it."""

import numpy as np
import pandas as pd

from spectral_training.cubes.store import CubeStore, TileBatch
from spectral_training.diagnostics import collect, format_report


def test_report_flags_missing_artifacts_and_zero_std_bands(tmp_path):
    store = CubeStore(tmp_path / "c.h5")
    store.create(num_bands=2, tile_size=4, band_names=["b0", "b1"], wavelengths_nm=None)
    store.append([TileBatch(cubes=np.ones((2, 2, 4, 4), "f4") * np.arange(2)[:, None, None, None], sample_ids=["a", "b"],
                            source_file="x", windows=np.zeros((2, 4), np.int32), labels=np.full(2, -1))])
    index = pd.DataFrame({"split": ["train", "val"]})
    stats = {"band_names": ["b0", "b1"], "mean": [0.5, 0.5], "std": [0.5, 0.0], "split": "train"}
    report = collect(store, index, stats, None, None)
    assert report["store"]["ok"] and report["store"]["samples_per_split"] == {"train": 1, "val": 1}
    assert report["band_stats"]["zero_std_bands"] == ["b1"]
    assert not report["transform_report"]["ok"] and "transform_validation" in report["transform_report"]["problem"]
    assert "checkpoint  [PROBLEM]" in format_report(report)


def test_a_sample_index_out_of_step_with_the_store_is_a_problem(tmp_path):
    store = CubeStore(tmp_path / "c.h5")
    store.create(num_bands=1, tile_size=4, band_names=None, wavelengths_nm=None)
    report = collect(store, pd.DataFrame({"split": ["train"]}))
    assert not report["store"]["ok"] and "rerun the ingestion" in report["store"]["problem"]
