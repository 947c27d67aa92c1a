"""Ingesting a folder of series: padding, cloudy dates dropped, rejections, layouts, the Dataset."""

import numpy as np
import pytest
import torch
from corpus import write_hdf5_cube
from series_corpus import write_series

from spectral_training.cubes.ingest import IngestionParams, ingest_folder
from spectral_training.cubes.series_dataset import SeriesDataset
from spectral_training.cubes.series_ingest import SeriesParams, detect_sample_layout, ingest_series_folder
from spectral_training.cubes.stats import compute_band_stats
from spectral_training.cubes.store import CubeStore, StoreSchemaError

PARAMS = IngestionParams(show_progress=False)
SERIES = SeriesParams(tile_size=4, min_valid_fraction=0.5)  # 8 x 8 files: 4 tiles each


def _ingest(tmp_path, series=SERIES):
    return ingest_series_folder(tmp_path / "raw", tmp_path / "s.h5", PARAMS, series)


@pytest.fixture
def raw(tmp_path):
    folder = tmp_path / "raw"
    folder.mkdir()
    return folder


def test_series_of_different_length_are_padded_with_the_date_mask(tmp_path, raw):
    write_series(raw / "long.h5", dates=["2021-01-10", "2021-02-10", "2021-03-10", "2021-04-10"])
    short = write_series(raw / "short.h5", dates=["2021-05-01", "2021-07-01"], seed=1)
    report, index = _ingest(tmp_path)
    store = CubeStore(tmp_path / "s.h5")
    assert store.info["max_seq_len"] == 4 and report["counts"]["tiles_appended"] == 8
    i = int(index.loc[index.sample_id == "short.h5@0,4", "store_index"].iloc[0])
    assert store.column("date_mask")[i].tolist() == [True, True, False, False]
    assert store.column("day_of_year")[i].tolist() == [121, 182, 0, 0]
    assert np.array_equal(store.read_one(i)[:2], short[:, :, 0:4, 4:8]) and not store.read_one(i)[2:].any()
    assert not store.read_valid_one(i)[2:].any()


def test_a_cloudy_date_is_dropped_from_its_tile_and_counted(tmp_path, raw):
    qa = np.zeros((3, 8, 8), np.uint8)
    qa[1, 0:4, 0:4] = 4  # date 2 clouded over the top-left tile only
    qa[2, 0:4, 0:2] = 4  # date 3 half clouded there: kept (min_valid_fraction 0.5)
    write_series(raw / "a.h5", qa=qa)
    report, index = _ingest(tmp_path)
    store = CubeStore(tmp_path / "s.h5")
    i = int(index.loc[index.sample_id == "a.h5@0,0", "store_index"].iloc[0])
    assert store.column("day_of_year")[i].tolist() == [60, 244, 0]
    assert store.read_valid_one(i)[1, :, :2].sum() == 0 and store.read_valid_one(i)[1, :, 2:].all()
    assert report["counts"]["dates_dropped_low_valid"] == 1 and report["ingested"][0]["dates_dropped"] == 1


def test_a_tile_with_no_valid_date_is_rejected_with_its_reason(tmp_path, raw):
    qa = np.zeros((3, 8, 8), np.uint8)
    qa[:, 4:8, 4:8] = 255  # no data ever in the bottom-right tile
    write_series(raw / "a.h5", qa=qa)
    report, index = _ingest(tmp_path)
    assert len(index) == 3 and report["counts"]["tiles_rejected_no_valid_date"] == 1
    [tile] = report["rejected_tiles"]
    assert tile["window"] == "rows 4:8, cols 4:8" and "no date with at least 50% valid pixels" in tile["reason"]


def test_sorting_and_repeated_dates_are_in_the_report(tmp_path, raw):
    write_series(raw / "a.h5", dates=["2021-06-01", "2021-03-01", "2021-06-01"])
    report, _ = _ingest(tmp_path)
    assert report["ingested"][0]["sorted_dates"] and report["ingested"][0]["duplicate_dates"] == ["2021-06-01"]
    assert report["counts"]["duplicate_dates"] == 1 and report["sample_layout"] == "series"


def test_bad_files_are_rejected_with_reasons_and_the_rest_ingested(tmp_path, raw):
    write_series(raw / "good.h5")
    (raw / "broken.h5").write_bytes(b"\x89HDF\r\n\x1a\n truncated")
    write_series(raw / "nodates.h5", dates=[1, 2, 3], dates_key="other")
    write_series(raw / "wrong_bands.h5", bands=5)
    write_series(raw / "too_small.h5", size=3)
    report, index = _ingest(tmp_path)
    reasons = {r["file"]: r["reason"] for r in report["rejected"]}
    assert set(reasons) == {"broken.h5", "nodates.h5", "wrong_bands.h5", "too_small.h5"}
    assert "no acquisition dates" in reasons["nodates.h5"] and "has 5 bands" in reasons["wrong_bands.h5"]
    assert all("Fix" in r for r in reasons.values()) and len(index) == 4


def test_a_file_with_more_dates_than_max_seq_len_is_rejected(tmp_path, raw):
    write_series(raw / "a.h5")
    report, _ = _ingest(tmp_path, SeriesParams(tile_size=4, max_seq_len=2))
    assert "has 3 dates, more than max_seq_len 2" in report["rejected"][0]["reason"]


def test_auto_layout_finds_series_and_cubes(tmp_path, raw):
    write_hdf5_cube(raw / "cube.h5")
    assert detect_sample_layout(raw, "auto", SERIES) == "cube"
    write_series(raw / "series.h5")
    assert detect_sample_layout(raw, "auto", SERIES) == "series"


def test_a_cube_store_refuses_a_series_ingestion_and_vice_versa(tmp_path, raw):
    cubes = tmp_path / "cubes"
    cubes.mkdir()
    write_hdf5_cube(cubes / "c.h5", (3, 8, 8))
    ingest_folder(cubes, tmp_path / "c.h5", IngestionParams(tile_size=4, show_progress=False))
    write_series(raw / "s.h5")
    with pytest.raises(StoreSchemaError, match="layout is 'cube'.*given: 'series'"):
        ingest_series_folder(raw, tmp_path / "c.h5", PARAMS, SERIES)
    _ingest(tmp_path)
    with pytest.raises(StoreSchemaError, match="layout is 'series'.*given: 'cube'"):
        ingest_folder(cubes, tmp_path / "s.h5", IngestionParams(tile_size=4, show_progress=False))


def test_the_dataset_gives_the_contract_normalised_with_invalid_pixels_zero(tmp_path, raw):
    qa = np.zeros((3, 8, 8), np.uint8)
    qa[0, 1, 1] = 4
    labels = np.zeros((8, 8), np.uint8)
    labels[:, 4:] = 2
    write_series(raw / "a.h5", dates=["2021-03-01", "2021-06-01", "2021-09-01"], qa=qa, labels=labels)
    write_series(raw / "b.h5", dates=["2021-04-01", "2021-08-01"], seed=3)
    _, index = _ingest(tmp_path)
    store = CubeStore(tmp_path / "s.h5")
    stats = compute_band_stats(store, index.store_index.to_numpy(), show_progress=False)
    rows = index[index.sample_id.isin(["a.h5@0,0", "a.h5@0,4"])].sort_values("sample_id")
    item = SeriesDataset(store, rows, stats)[0]
    assert item["series"].shape == (3, 3, 4, 4) and item["series"].dtype == torch.float32
    assert item["day_of_year"].dtype == torch.int64 and item["date_mask"].tolist() == [True, True, True]
    assert item["valid"].dtype == torch.bool and not item["valid"][0, 1, 1] and item["series"][0, :, 1, 1].eq(0).all()
    raw_value = store.read_one(int(rows.store_index.iloc[0]))[1, 2, 3, 3]
    assert item["series"][1, 2, 3, 3].item() == pytest.approx((raw_value - stats["mean"][2]) / stats["std"][2], rel=1e-5)
    assert item["label"].dtype == torch.int64 and item["label"].item() == -1 and item["label_map"].eq(-1).all()
    assert SeriesDataset(store, rows, stats)[1]["label_map"].eq(2).all() and item["sample_id"] == "a.h5@0,0"


def test_the_dataset_pads_short_series_with_zeros(tmp_path, raw):
    write_series(raw / "a.h5")
    write_series(raw / "b.h5", dates=["2021-04-01"], seed=3)
    _, index = _ingest(tmp_path)
    store = CubeStore(tmp_path / "s.h5")
    stats = compute_band_stats(store, index.store_index.to_numpy(), show_progress=False)
    item = SeriesDataset(store, index[index.sample_id.str.startswith("b.h5")], stats)[0]
    assert item["date_mask"].tolist() == [True, False, False] and item["day_of_year"].tolist() == [91, 0, 0]
    assert item["series"][1:].eq(0).all() and not item["valid"][1:].any() and item["series"][0].ne(0).any()


def test_class_sub_folders_label_every_tile_of_their_files(tmp_path, raw):
    for k, name in enumerate(("maize", "wheat")):
        (raw / name).mkdir()
        write_series(raw / name / "a.h5", seed=k)
    report, index = _ingest(tmp_path)
    assert report["class_names"] == ["maize", "wheat"]
    assert index.groupby(index.source_file.str.split("/").str[0]).label.unique().map(list).to_dict() == {
        "maize": [0], "wheat": [1]}
