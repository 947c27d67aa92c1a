"""The statistics pass's compiled kernels against numpy: moments, extremes, picked pixels, percentiles."""

import numpy as np
import pytest

from spectral_training.cubes.band_kernels import block_summary, row_percentiles


def _as_bytes_at(samples: np.ndarray, gap: int) -> tuple[np.ndarray, np.ndarray]:
    """The samples laid out in a byte buffer with ``gap`` bytes before each (odd gaps leave the
    float32 values unaligned, as a chunk's offset in an HDF5 file may), and their offsets."""
    sample_bytes = samples[0].nbytes
    buffer = np.zeros(len(samples) * (sample_bytes + gap), dtype=np.uint8)
    offsets = np.arange(len(samples), dtype=np.int64) * (sample_bytes + gap) + gap
    for k, offset in enumerate(offsets):
        buffer[offset : offset + sample_bytes] = samples[k].reshape(-1).view(np.uint8)
    return buffer, offsets[::-1].copy()  # in any order: the offsets say where each sample is


@pytest.mark.parametrize("gap", [0, 3])
def test_block_summary_matches_numpy_float64_and_gathers_the_picked_pixels(gap):
    rng = np.random.default_rng(0)
    samples = rng.normal(800, 30, size=(6, 4, 5 * 7)).astype(np.float32)
    samples[3, 1, 4] = -2.5e5  # negative extremes go through the ordered integer keys
    buffer, offsets = _as_bytes_at(samples, gap)
    ordered = samples[::-1]  # what the reversed offsets point at
    picks = rng.integers(0, 35, size=(6, 3))
    (count, mean, m2, low, high), offers = block_summary(buffer, offsets, 4, 35, picks)
    as64 = ordered.astype(np.float64)
    assert np.array_equal(count, np.full(4, 6 * 35))
    np.testing.assert_allclose(mean, as64.mean(axis=(0, 2)), rtol=1e-13)
    np.testing.assert_allclose(m2, ((as64 - as64.mean(axis=(0, 2), keepdims=True)) ** 2).sum(axis=(0, 2)), rtol=1e-12)
    assert np.array_equal(low, ordered.min(axis=(0, 2))) and np.array_equal(high, ordered.max(axis=(0, 2)))
    want = ordered[np.arange(6)[:, None], :, picks].transpose(2, 0, 1).reshape(4, -1)  # (C, k * m), image order
    assert np.array_equal(offers, want)


def test_the_deviations_from_a_rows_first_value_lose_no_accuracy_when_it_is_an_outlier():
    """The one-pass M2 = sum(d^2) - sum(d)^2 / n is taken about the row's first value; a bright,
    low-noise row whose first value is far off (a dead pixel) is the worst case for it."""
    rng = np.random.default_rng(1)
    row = (1e4 + rng.standard_normal(4096)).astype(np.float32)
    row[0] = 0.0  # 1e4 standard deviations of the rest below their mean
    samples = row.reshape(1, 1, -1)
    (_, mean, m2, low, _), _ = block_summary(samples.reshape(-1).view(np.uint8), np.array([0]), 1, 4096,
                                             np.empty((1, 0), np.int64))
    as64 = row.astype(np.float64)
    assert abs(mean[0] - as64.mean()) / as64.mean() < 1e-12
    assert abs(m2[0] - ((as64 - as64.mean()) ** 2).sum()) / ((as64 - as64.mean()) ** 2).sum() < 1e-9
    assert low[0] == 0.0


def test_block_summary_writes_offers_into_a_slice_and_nan_reaches_the_mean():
    samples = np.arange(2 * 2 * 4, dtype=np.float32).reshape(2, 2, 4)
    samples[1, 0, 2] = np.nan
    reservoir = np.full((2, 10), -1.0, dtype=np.float32)
    picks = np.array([[0, 3], [1, 2]])
    (_, mean, _, _, _), offers = block_summary(samples.reshape(-1).view(np.uint8), np.array([0, 32]), 2, 4, picks,
                                               offers=reservoir[:, 5:9])
    assert offers.base is reservoir or np.shares_memory(offers, reservoir)
    assert np.array_equal(reservoir[:, :5], np.full((2, 5), -1.0)) and reservoir[1, 9] == -1.0
    np.testing.assert_array_equal(reservoir[:, 5:9], [[0, 3, 9, np.nan], [4, 7, 13, 14]])
    assert np.isnan(mean[0]) and np.isfinite(mean[1])


def test_block_summary_rejects_offsets_and_picks_out_of_range():
    buffer = np.zeros(64, dtype=np.uint8)
    with pytest.raises(IndexError, match="ends past"):
        block_summary(buffer, np.array([40]), 2, 4, np.zeros((1, 0), np.int64))  # 32 bytes from 40 > 64
    with pytest.raises(IndexError, match="picks"):
        block_summary(buffer, np.array([0]), 2, 4, np.array([[4]]))
    with pytest.raises(ValueError, match="uint8"):
        block_summary(buffer.view(np.float32), np.array([0]), 2, 4, np.zeros((1, 0), np.int64))


@pytest.mark.parametrize("values", [
    np.random.default_rng(3).normal(1500, 300, size=(7, 20000)),
    np.random.default_rng(4).integers(-5, 5, size=(3, 7)),  # ties and negative values
    -np.abs(np.random.default_rng(5).standard_normal((4, 1001))),
    np.ones((2, 1)),
    np.zeros((2, 50)),
])
@pytest.mark.parametrize("qs", [(2.0, 98.0), (0.0, 100.0), (50.0,), (33.3, 66.6, 99.9)])
def test_row_percentiles_equal_numpys(values, qs):
    values = values.astype(np.float32)
    want = np.percentile(values.astype(np.float64), qs, axis=1)
    np.testing.assert_allclose(row_percentiles(values, qs), want, rtol=1e-6, atol=1e-6)


def test_row_percentiles_of_the_first_columns_only():
    rng = np.random.default_rng(6)
    values = np.full((3, 100), 1e9, dtype=np.float32)
    values[:, :60] = rng.standard_normal((3, 60))
    want = np.percentile(values[:, :60].astype(np.float64), [2, 98], axis=1)
    np.testing.assert_allclose(row_percentiles(values, (2.0, 98.0), columns=60), want, rtol=1e-6)
    with pytest.raises(ValueError, match="columns"):
        row_percentiles(values, (2.0,), columns=0)
