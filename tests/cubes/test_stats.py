"""Streaming band statistics: exactness, train split only, flat memory by construction."""

import numpy as np
import pytest

from spectral_training.cubes.stats import RunningBandStats, block_moments, compute_band_stats
from spectral_training.cubes.store import CubeStore, TileBatch

# The accuracy users need on mean and std, relative to numpy's float64 of the float32 data (7
# digits): rows are summed in float64 by the compiled kernel (~1e-15 measured), so 1e-6 holds
# with a wide margin; a float32 sum would lose it on a bright band (mean/std = 1e4).
ACCURACY = 1e-6


@pytest.fixture
def store(tmp_path):
    rng = np.random.default_rng(0)
    values = (rng.normal(3000.0, 250.0, size=(21, 5, 6, 6)) * rng.uniform(0.5, 2, size=(1, 5, 1, 1))).astype("f4")
    s = CubeStore(tmp_path / "cubes.h5")
    s.create(num_bands=5, tile_size=6, band_names=None, wavelengths_nm=None)
    s.append([TileBatch(cubes=values, sample_ids=[f"s{i}" for i in range(21)], source_file="x",
                        windows=np.zeros((21, 4), np.int32), labels=np.full(21, -1))])
    return s, values


def test_mean_and_std_equal_numpy_float64_to_1e_6(store):
    s, values = store
    idx = np.arange(21)
    stats = compute_band_stats(s, idx, block_size=4, show_progress=False)
    as64 = values.astype(np.float64)
    np.testing.assert_allclose(stats["mean"], as64.mean(axis=(0, 2, 3)), rtol=ACCURACY)
    np.testing.assert_allclose(stats["std"], as64.std(axis=(0, 2, 3)), rtol=ACCURACY)
    assert [b["count"] for b in stats["bands"]] == [21 * 36] * 5
    assert stats["bands"][2]["min"] == values[:, 2].min() and stats["bands"][2]["max"] == values[:, 2].max()


def test_only_the_given_samples_are_used(store):
    s, values = store
    train = np.array([1, 5, 7])
    stats = compute_band_stats(s, train, block_size=2, show_progress=False)
    np.testing.assert_allclose(stats["mean"], values[train].astype(np.float64).mean(axis=(0, 2, 3)), rtol=ACCURACY)


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
    count, mean, m2, _, _ = block_moments(data)
    np.testing.assert_allclose(merged.mean, mean, rtol=1e-12)
    np.testing.assert_allclose(merged.m2, m2, rtol=1e-9)


def test_no_train_samples_is_a_clear_error(store):
    s, _ = store
    with pytest.raises(ValueError, match="no training samples"):
        compute_band_stats(s, np.array([], dtype=int), show_progress=False)


def test_a_bright_low_noise_band_keeps_1e_6_accuracy(tmp_path):
    """mean/std = 1e4: a one-pass sum(x^2) - sum(x) * mean would lose ~7 digits of the variance,
    and float32 sums of the raw values about zero would lose them all."""
    rng = np.random.default_rng(3)
    values = rng.standard_normal((19, 3, 8, 8)).astype("f4")
    values[:, 0] += np.float32(1e4)  # mean/std = 1e4
    values[:, 1] = values[:, 1] * 5 + np.float32(2e5)  # 4e4
    values[:, 2] = values[:, 2] * 40 + 300  # an ordinary band
    s = CubeStore(tmp_path / "bright.h5")
    s.create(num_bands=3, tile_size=8, band_names=None, wavelengths_nm=None)
    s.append([TileBatch(cubes=values, sample_ids=[f"s{i}" for i in range(19)], source_file="x",
                        windows=np.zeros((19, 4), np.int32), labels=np.full(19, -1))])
    stats = compute_band_stats(s, np.arange(19), block_size=4, show_progress=False)
    as64 = values.astype(np.float64)
    np.testing.assert_allclose(stats["mean"], as64.mean(axis=(0, 2, 3)), rtol=ACCURACY)
    np.testing.assert_allclose(stats["std"], as64.std(axis=(0, 2, 3)), rtol=ACCURACY)


def test_block_moments_match_numpy_float64_with_exact_min_and_max():
    rng = np.random.default_rng(4)
    block = rng.normal(500, 20, size=(5, 9, 6, 7)).astype("f4")
    block[2, 3, 1, 1] = -1e6  # a negative minimum: min/max are compared through ordered integer keys
    count, mean, m2, minimum, maximum = block_moments(block)
    as64 = block.astype(np.float64)
    assert np.array_equal(count, np.full(9, 5 * 6 * 7))
    np.testing.assert_allclose(mean, as64.mean(axis=(0, 2, 3)), rtol=ACCURACY)
    np.testing.assert_allclose(m2, ((as64 - as64.mean(axis=(0, 2, 3), keepdims=True)) ** 2).sum(axis=(0, 2, 3)),
                               rtol=2 * ACCURACY)  # M2 ~ std^2: twice the std's relative error
    assert np.array_equal(minimum, block.min(axis=(0, 2, 3))) and np.array_equal(maximum, block.max(axis=(0, 2, 3)))


def test_pixel_sample_memory_is_bounded_beyond_the_budget_and_stays_representative():
    from spectral_training.cubes.stats import PixelSample

    rng = np.random.default_rng(5)
    budget = 500
    sample = PixelSample(2, num_samples=3 * budget, pixels_per_image=16, budget=budget, seed=1)
    assert sample.per_sample == 1  # more images than the budget: one pixel offered per image
    seen = []
    for _ in range(3 * budget // 10):
        block = rng.uniform(0, 1, size=(10, 2, 4, 4)).astype("f4")
        block[:, 1] += 10
        sample.update(block)
        seen.append(block)
        assert sample.values.shape == (2, budget)  # never grows
    assert sample.offered == 3 * budget and sample.size == budget
    pct = sample.percentiles((2.0, 98.0))
    assert abs(pct[2.0][0] - 0.02) < 0.03 and abs(pct[98.0][0] - 0.98) < 0.03
    assert abs(pct[2.0][1] - 10.02) < 0.03 and abs(pct[98.0][1] - 10.98) < 0.03
    # Memory stays bounded even when more samples come than announced.
    sample.update(rng.uniform(0, 1, size=(50, 2, 4, 4)).astype("f4"))
    assert sample.values.shape == (2, budget) and sample.size == budget


def test_pixel_sample_keeps_every_offer_while_under_budget():
    from spectral_training.cubes.stats import PixelSample

    block = np.arange(3 * 2 * 4 * 4, dtype="f4").reshape(3, 2, 4, 4)
    sample = PixelSample(2, num_samples=3, pixels_per_image=16, budget=1000, seed=0)
    assert sample.per_sample == 16
    sample.update(block)
    assert sample.size == 48
    held = np.sort(sample.values[:, :48], axis=1)
    offered = np.sort(np.concatenate([block[i].reshape(2, 16) for i in range(3)], axis=1), axis=1)
    assert set(held[0]) <= set(offered[0]) and set(held[1]) <= set(offered[1])


def test_stats_over_many_blocks_with_a_short_last_block_match_numpy(store):
    s, values = store
    idx = np.array([20, 0, 3, 4, 5, 9, 10, 11, 17])  # unsorted, runs and gaps, 9 = 4 + 4 + 1
    stats = compute_band_stats(s, idx, block_size=4, show_progress=False)
    chosen = values[np.sort(idx)].astype(np.float64)
    np.testing.assert_allclose(stats["mean"], chosen.mean(axis=(0, 2, 3)), rtol=ACCURACY)
    np.testing.assert_allclose(stats["std"], chosen.std(axis=(0, 2, 3)), rtol=ACCURACY)
    assert [b["min"] for b in stats["bands"]] == list(values[idx].min(axis=(0, 2, 3)).astype(float))


def test_the_figures_do_not_depend_on_the_number_of_threads(store):
    s, _ = store
    idx = np.arange(21)
    one = compute_band_stats(s, idx, block_size=2, show_progress=False, workers=1)
    for workers in (2, 4):
        assert compute_band_stats(s, idx, block_size=2, show_progress=False, workers=workers) == one


def test_a_mapped_pass_and_a_copied_pass_give_the_same_statistics(tmp_path):
    """An uncompressed store is summed where it lies (mapped, in large blocks); a compressed one
    is read block by block: both see the same pixels, offer the same ones to the percentile
    sample, and agree to float64 rounding."""
    rng = np.random.default_rng(7)
    values = rng.normal(2000, 100, size=(37, 4, 8, 8)).astype("f4")
    stores = {}
    for compression in (None, "lzf"):
        s = CubeStore(tmp_path / f"{compression}.h5")
        s.create(num_bands=4, tile_size=8, band_names=None, wavelengths_nm=None, compression=compression)
        s.append([TileBatch(cubes=values, sample_ids=[f"s{i}" for i in range(37)], source_file="x",
                            windows=np.zeros((37, 4), np.int32), labels=np.full(37, -1))])
        stores[compression] = s
    train = np.sort(rng.choice(37, size=29, replace=False))  # gaps between the samples read
    assert stores[None].plain_reads and not stores["lzf"].plain_reads
    mapping = stores[None].map_for_pass(train)
    assert mapping is not None and stores["lzf"].map_for_pass(train) is None
    mapping.close()
    mapped, copied = (compute_band_stats(stores[k], train, block_size=4, show_progress=False) for k in (None, "lzf"))
    np.testing.assert_allclose(mapped["mean"], copied["mean"], rtol=1e-14)
    np.testing.assert_allclose(mapped["std"], copied["std"], rtol=1e-12)
    for a, b in zip(mapped["bands"], copied["bands"]):
        assert (a["min"], a["max"], a["p2"], a["p98"], a["count"]) == (b["min"], b["max"], b["p2"], b["p98"], b["count"])
    assert {k: v for k, v in mapped.items() if k not in ("mean", "std", "bands")} == \
        {k: v for k, v in copied.items() if k not in ("mean", "std", "bands")}
    as64 = values[train].astype(np.float64)
    np.testing.assert_allclose(mapped["std"], as64.std(axis=(0, 2, 3)), rtol=ACCURACY)
