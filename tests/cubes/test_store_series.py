"""Series stores: the recorded sample layout, round trips of series with their dates and masks,
refusal of the other layout, and band statistics over valid observations only."""

import h5py
import numpy as np
import pytest

from spectral_training.cubes.stats import compute_band_stats
from spectral_training.cubes.store import CubeStore, StoreSchemaError, TileBatch

L, C, S = 4, 3, 4  # max_seq_len, bands, tile size


def series_batch(k: int, seed: int = 0, prefix: str = "s", dates: int = 3) -> TileBatch:
    """k series of ``dates`` real dates padded to L, with some invalid pixels."""
    rng = np.random.default_rng(seed)
    series = np.zeros((k, L, C, S, S), np.float32)
    series[:, :dates] = rng.normal(100, 10, size=(k, dates, C, S, S))
    doy = np.zeros((k, L), np.int64)
    doy[:, :dates] = [10, 100, 200][:dates]
    mask = doy > 0
    valid = np.zeros((k, L, S, S), bool)
    valid[:, :dates] = rng.random((k, dates, S, S)) > 0.3
    return TileBatch(cubes=series, sample_ids=[f"{prefix}{i}" for i in range(k)], source_file=f"{prefix}.h5",
                     windows=np.zeros((k, 4), np.int32), labels=np.arange(k) % 2, day_of_year=doy,
                     date_mask=mask, valid=valid)


def cube_batch(k: int = 2) -> TileBatch:
    return TileBatch(cubes=np.arange(k * C * S * S, dtype=np.float32).reshape(k, C, S, S), sample_ids=[f"c{i}" for i in range(k)],
                     source_file="c.h5", windows=np.zeros((k, 4), np.int32), labels=np.full(k, -1))


@pytest.fixture
def series_store(tmp_path):
    s = CubeStore(tmp_path / "series.h5")
    s.create(num_bands=C, tile_size=S, band_names=None, wavelengths_nm=None, sample_layout="series", max_seq_len=L)
    return s


@pytest.fixture
def cube_store(tmp_path):
    s = CubeStore(tmp_path / "cubes.h5")
    s.create(num_bands=C, tile_size=S, band_names=None, wavelengths_nm=None)
    return s


def test_series_round_trip_with_dates_masks_and_one_sample_per_chunk(series_store):
    batch = series_batch(5)
    series_store.append([batch])
    info = series_store.info
    assert (info["sample_layout"], info["max_seq_len"], info["num_samples"]) == ("series", L, 5)
    assert np.array_equal(series_store.read([4, 0]), batch.cubes[[4, 0]])
    assert np.array_equal(series_store.read_one(2), batch.cubes[2])
    assert np.array_equal(series_store.read_valid([3, 1]), batch.valid[[3, 1]])
    assert np.array_equal(series_store.read_valid_one(2), batch.valid[2])
    assert np.array_equal(series_store.column("day_of_year"), batch.day_of_year)
    assert np.array_equal(series_store.column("date_mask"), batch.date_mask)
    with h5py.File(series_store.path) as f:
        assert f["series"].chunks == (1, L, C, S, S) and f["valid"].chunks == (1, L, S, S)


def test_the_same_pixels_with_another_cloud_mask_are_another_sample(series_store):
    batch = series_batch(2)
    other = series_batch(2, prefix="t")
    other.valid[0, 0, 0, 0] = not other.valid[0, 0, 0, 0]
    assert series_store.append([batch]).appended == 2
    summary = series_store.append([other])
    assert (summary.appended, summary.duplicates) == (1, 1)


def test_a_store_without_the_layout_attribute_reads_as_cube(cube_store):
    cube_store.append([cube_batch()])
    with h5py.File(cube_store.path, "r+") as f:
        del f.attrs["sample_layout"]  # as written before layouts were recorded
    assert cube_store.sample_layout == "cube" and cube_store.info["max_seq_len"] is None
    assert cube_store.read([1]).shape == (1, C, S, S)


def test_a_cube_store_refuses_a_series_append_naming_both_layouts_and_the_fix(cube_store):
    with pytest.raises(StoreSchemaError, match=r"s\.h5.*'cube'.*given: 'series'.*dataset=<new name>"):
        cube_store.append([series_batch(1)])
    assert len(cube_store) == 0


def test_a_series_store_refuses_a_cube_append(series_store):
    with pytest.raises(StoreSchemaError, match=r"c\.h5.*'series'.*given: 'cube'"):
        series_store.append([cube_batch()])


def test_a_series_of_another_length_is_refused_with_the_store_max_seq_len(tmp_path):
    s = CubeStore(tmp_path / "x.h5")
    s.create(num_bands=C, tile_size=S, band_names=None, wavelengths_nm=None, sample_layout="series", max_seq_len=L + 1)
    with pytest.raises(StoreSchemaError, match="max_seq_len 5"):
        s.append([series_batch(1)])


def test_stats_of_a_series_store_count_valid_observations_only(series_store):
    batch = series_batch(6, seed=3)
    batch.cubes[~np.broadcast_to(batch.valid[:, :, None], batch.cubes.shape)] = 1e6  # clouds: far off
    series_store.append([batch])
    train = np.array([0, 2, 3, 5])
    stats = compute_band_stats(series_store, train, block_size=3, show_progress=False)
    obs = np.moveaxis(batch.cubes[train], 2, 0)[:, batch.valid[train]].astype(np.float64)  # (C, n_valid)
    np.testing.assert_allclose(stats["mean"], obs.mean(axis=1), rtol=1e-9)
    np.testing.assert_allclose(stats["std"], obs.std(axis=1), rtol=1e-9)
    assert stats["bands"][0]["count"] == int(batch.valid[train].sum())
    assert max(b["max"] for b in stats["bands"]) < 1e6 and max(b["p98"] for b in stats["bands"]) < 1e6


def test_a_compressed_series_store_reads_and_sums_the_same(tmp_path):
    batch = series_batch(4, seed=5)
    plain, packed = CubeStore(tmp_path / "plain.h5"), CubeStore(tmp_path / "lzf.h5")
    for store, compression in ((plain, None), (packed, "lzf")):
        store.create(num_bands=C, tile_size=S, band_names=None, wavelengths_nm=None, compression=compression,
                     sample_layout="series", max_seq_len=L)
        store.append([batch])
    assert packed._sample_reader().table[3] is None  # compressed: read through h5py
    assert np.array_equal(packed.read([3, 0]), batch.cubes[[3, 0]])
    assert np.array_equal(packed.read_valid([2]), batch.valid[[2]])
    one, two = (compute_band_stats(s, np.arange(4), show_progress=False) for s in (plain, packed))
    assert one["mean"] == two["mean"] and one["std"] == two["std"]
