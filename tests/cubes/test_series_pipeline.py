"""End to end: `kedro run --pipeline data` on a tiny folder of series picks the series layout."""

import json

import numpy as np
import pandas as pd
import pytest
from series_corpus import write_series

from spectral_training.io import latest_version

pytestmark = pytest.mark.e2e


def test_the_data_pipeline_ingests_series_and_computes_stats_over_valid_observations(kedro_project):
    raw = kedro_project.raw("tiny_series")
    qa = np.zeros((3, 8, 8), np.uint8)
    qa[0] = 4  # the first date is all cloud: dropped from every tile
    write_series(raw / "a.h5", qa=qa)
    write_series(raw / "b.h5", dates=["2021-05-01", "2021-05-01"], seed=1)  # a repeated date
    before = {p: p.read_bytes() for p in raw.rglob("*") if p.is_file()}

    run = kedro_project.kedro("run", "--pipeline", "data", "--params",
                              "dataset=tiny_series,ingestion.series.tile_size=4,ingestion.show_progress=false,"
                              "normalisation_stats.show_progress=false")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    report = json.loads(latest_version(kedro_project.path("data/08_reporting/tiny_series/ingestion_report.json")).read_text())
    assert report["sample_layout"] == "series" and report["max_seq_len"] == 3 and report["rejected"] == []
    assert report["counts"]["dates_dropped_low_valid"] == 4 and report["counts"]["duplicate_dates"] == 1
    index = pd.read_parquet(kedro_project.path("data/02_intermediate/tiny_series/sample_index.parquet"))
    assert len(index) == 8
    stats = json.loads(latest_version(kedro_project.path("data/03_primary/tiny_series/band_stats.json")).read_text())
    train = int((index.split == "train").sum())
    # 'a' keeps 2 clear dates per tile, 'b' 1 date: the cloudy date (values ~100) never counts.
    a_tiles = int(((index.split == "train") & index.sample_id.str.startswith("a.h5")).sum())
    assert stats["bands"][0]["count"] == (2 * a_tiles + (train - a_tiles)) * 16
    assert stats["sample_layout"] == "series"
    assert before == {p: p.read_bytes() for p in raw.rglob("*") if p.is_file()}
