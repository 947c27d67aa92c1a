"""The synthetic sits_demo series: deterministic, phenology-driven, ingestible with the defaults."""

import numpy as np

from spectral_training.cubes.demo_series import CLASSES, class_reflectance, green_cover, sits_demo_files
from spectral_training.cubes.ingest import IngestionParams
from spectral_training.cubes.series_ingest import SeriesParams, ingest_series_folder

TINY = {"locations": 2, "size": 16, "fields": 3, "min_dates": 4, "max_dates": 6}


def test_the_demo_is_the_same_bytes_every_time_and_another_seed_changes_it():
    first = sits_demo_files(**TINY)
    assert first == sits_demo_files(**TINY)
    assert sits_demo_files(**TINY, seed=7)["loc_00.h5"] != first["loc_00.h5"]
    assert "SYNTHETIC" in first["README.md"].decode()


def test_crops_share_one_spectrum_and_differ_by_the_timing_of_their_season():
    days = np.arange(1, 366)
    crops = [name for name, p in CLASSES.items() if p.canopy == "crop" and p.vmax > 0.5 and p.vmin < 0.3]  # annual
    peaks = sorted(int(days[np.argmax(green_cover(days, CLASSES[name]))]) for name in crops)
    assert len(crops) >= 4 and min(np.diff(peaks)) >= 15
    # On one date two crops can look alike: wheat going brown as maize greens up.
    wheat, maize = class_reflectance("winter_wheat", days), class_reflectance("maize", days)
    assert np.abs(wheat - maize).max(axis=1).min() < 0.02 < np.abs(wheat - maize).max()


def test_the_demo_ingests_with_the_default_parameters_and_names_its_classes(tmp_path):
    raw = tmp_path / "sits_demo"
    raw.mkdir()
    for name, content in sits_demo_files(**TINY).items():
        (raw / name).write_bytes(content)
    report, index = ingest_series_folder(raw, tmp_path / "s.h5", IngestionParams(show_progress=False), SeriesParams())
    assert report["rejected"] == [] and len(index) == 2 * 1  # one 16 px tile per 16 px location
    assert report["class_names"][0] == "unlabelled" and report["class_names"][1:] == list(CLASSES)
