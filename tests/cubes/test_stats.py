"""Streaming band statistics: exactness, train split only, flat memory by construction."""

import numpy as np
import pytest

from spectral_training.cubes.stats import RunningBandStats, block_moments, compute_band_stats
from spectral_training.cubes.store import CubeStore, TileBatch


@pytest.fixture
def store(tmp_path):
    rng = np.random.default_rng(0)
    values = (rng.normal(3000.0, 250.0, size=(21, 5, 6, 6)) * rng.uniform(0.5, 2, size=(1, 5, 1, 1))).astype("f4")
    s = CubeStore(tmp_path / "cubes.h5")
    s.create(num_bands=5, tile_size=6, band_names=None, wavelengths_nm=None)
    s.append([TileBatch(cubes=values, sample_ids=[f"s{i}" for i in range(21)], source_file="x",
                        windows=np.zeros((21, 4), np.int32), labels=np.full(21, -1))])
    return s, values


def test_mean_and_std_equal_numpy_float64_to_1e_9(store):
    s, values = store
    idx = np.arange(21)
    stats = compute_band_stats(s, idx, block_size=4, show_progress=False)
    as64 = values.astype(np.float64)
    np.testing.assert_allclose(stats["mean"], as64.mean(axis=(0, 2, 3)), rtol=1e-9)
    np.testing.assert_allclose(stats["std"], as64.std(axis=(0, 2, 3)), rtol=1e-9)
    assert [b["count"] for b in stats["bands"]] == [21 * 36] * 5
    assert stats["bands"][2]["min"] == values[:, 2].min() and stats["bands"][2]["max"] == values[:, 2].max()


def test_only_the_given_samples_are_used(store):
    s, values = store
    train = np.array([1, 5, 7])
    stats = compute_band_stats(s, train, block_size=2, show_progress=False)
    np.testing.assert_allclose(stats["mean"], values[train].astype(np.float64).mean(axis=(0, 2, 3)), rtol=1e-9)


def test_percentiles_are_close_to_the_exact_ones(store):
    s, values = store
    stats = compute_band_stats(s, np.arange(21), show_progress=False)
    exact = np.percentile(values[:, 0], [2, 98])
    spread = values[:, 0].std()
    assert abs(stats["bands"][0]["p2"] - exact[0]) < 0.1 * spread
    assert abs(stats["bands"][0]["p98"] - exact[1]) < 0.1 * spread


def test_chan_merge_of_two_halves_equals_one_pass():
    rng = np.random.default_rng(1)
    data = rng.normal(10, 3, size=(8, 3, 4, 4)).astype("f4")
    merged = RunningBandStats(3)
    merged.update(data[:3])
    merged.update(data[3:])
    count, mean, m2, _, _ = block_moments(data, threads=1)
    np.testing.assert_allclose(merged.mean, mean, rtol=1e-12)
    np.testing.assert_allclose(merged.m2, m2, rtol=1e-9)


def test_no_train_samples_is_a_clear_error(store):
    s, _ = store
    with pytest.raises(ValueError, match="no training samples"):
        compute_band_stats(s, np.array([], dtype=int), show_progress=False)
