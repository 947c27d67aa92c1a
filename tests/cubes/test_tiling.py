"""Tiling, non-finite repair, tile labels, and the split function."""

import numpy as np
import pytest

from spectral_training.cubes.splits import split_of, validate_fractions
from spectral_training.cubes.tiling import majority_labels, repair_nonfinite, tile_starts, tile_windows


def test_last_tile_is_aligned_to_the_edge_so_no_pixel_is_lost():
    assert tile_starts(10, 4, 4) == [0, 4, 6]
    assert tile_starts(8, 4, 4) == [0, 4]
    assert tile_starts(3, 4, 4) == []
    assert len(tile_windows(10, 8, 4, 4)) == 3 * 2


def test_a_few_nans_are_repaired_with_the_band_mean_of_the_tile():
    tiles = np.ones((1, 2, 10, 10), "f4")
    tiles[0, 1] = 5.0
    tiles[0, 1, 0, 0] = np.nan
    result = repair_nonfinite(tiles, "band_mean", max_fraction=0.01)
    assert result.kept.all() and result.repaired_tiles == 1 and result.repaired_values == 1
    assert tiles[0, 1, 0, 0] == 5.0 and np.isfinite(tiles).all()


def test_a_tile_with_too_many_nans_is_rejected():
    tiles = np.ones((2, 1, 10, 10), "f4")
    tiles[1, 0, :5] = np.inf
    result = repair_nonfinite(tiles, "zero", max_fraction=0.1)
    assert list(result.kept) == [True, False]
    assert result.nonfinite_fraction[1] == pytest.approx(0.5)


def test_reject_policy_rejects_any_nonfinite_tile():
    tiles = np.ones((1, 1, 10, 10), "f4")
    tiles[0, 0, 0, 0] = np.nan
    assert not repair_nonfinite(tiles, "reject", max_fraction=0.5).kept[0]


def test_tile_label_is_the_majority_of_labelled_pixels_and_minus_one_when_none():
    maps = np.zeros((2, 3, 3), np.int32)
    maps[0] = [[0, 2, 2], [3, 0, 0], [0, 0, 0]]
    assert list(majority_labels(maps)) == [2, -1]


def test_split_depends_on_the_sample_id_only_and_follows_the_fractions():
    fractions = validate_fractions({"train": 0.7, "val": 0.2, "test": 0.1})
    ids = [f"file_{i}.h5@0,{i}" for i in range(4000)]
    splits = [split_of(i, fractions) for i in ids]
    assert splits == [split_of(i, fractions) for i in ids]
    assert splits.count("train") / len(ids) == pytest.approx(0.7, abs=0.03)
    assert splits.count("test") / len(ids) == pytest.approx(0.1, abs=0.02)


def test_split_fractions_must_add_up_to_one():
    with pytest.raises(ValueError, match="add up to 1"):
        validate_fractions({"train": 0.5, "val": 0.1, "test": 0.1})


def _cut_one_by_one(cube: np.ndarray, windows: np.ndarray) -> np.ndarray:
    return np.stack([cube[:, r : r + h, c : c + w] for r, c, h, w in windows]).astype(np.float32)


def test_cut_equals_tile_by_tile_for_any_window_set_and_casts_to_float32():
    from spectral_training.cubes.tiling import cut

    cube = np.random.default_rng(0).normal(size=(3, 12, 16)).astype("f4")
    cases = {
        "a full grid": tile_windows(12, 16, 4, 4),
        "an offset sub-grid": np.array([(r, c, 4, 4) for r in (2, 6) for c in (1, 5, 9)], np.int32),
        "edge-aligned (overlapping last row and column)": tile_windows(10, 10, 4, 4),
        "overlapping stride": tile_windows(10, 10, 4, 2),
        "a partial batch of a grid": tile_windows(8, 8, 2, 2)[:10],
        "column-major order": tile_windows(8, 8, 4, 4)[[0, 2, 1, 3]],
        "one window": np.array([[3, 5, 4, 4]], np.int32),
    }
    for name, windows in cases.items():
        assert np.array_equal(cut(cube, windows), _cut_one_by_one(cube, windows)), name
    as_uint16 = (np.abs(cube) * 1000).astype(np.uint16)  # a cast on the way
    got = cut(as_uint16, tile_windows(12, 16, 4, 4))
    assert got.dtype == np.float32 and np.array_equal(got, _cut_one_by_one(as_uint16, tile_windows(12, 16, 4, 4)))
    assert np.array_equal(cut(cube[:, ::-1], cases["a full grid"]), _cut_one_by_one(cube[:, ::-1], cases["a full grid"]))
    assert cut(cube, np.zeros((0, 4), np.int32)).shape == (0, 3, 0, 0)


@pytest.mark.parametrize("window", [[10, 0, 4, 4], [0, -1, 4, 4], [0, 0, 4, 3]])
def test_a_window_outside_the_cube_is_refused_before_any_copy(window):
    from spectral_training.cubes.tiling import cut

    cube = np.zeros((2, 12, 16), np.float32)
    with pytest.raises(ValueError, match=r"\[.*\] is not a 4 x 4 window inside the 12 x 16 image"):
        cut(cube, np.array([[0, 0, 4, 4], window], np.int32))


def test_all_finite_tiles_take_the_fast_check_with_nothing_repaired():
    tiles = np.random.default_rng(2).normal(size=(3, 2, 5, 5)).astype("f4")
    before = tiles.copy()
    result = repair_nonfinite(tiles, "band_mean", max_fraction=0.01)
    assert result.kept.dtype == bool and result.kept.all()
    assert (result.repaired_tiles, result.repaired_values) == (0, 0)
    assert np.array_equal(result.nonfinite_fraction, np.zeros(3)) and np.array_equal(tiles, before)


def test_a_finite_tile_whose_sum_overflows_is_checked_exactly_and_kept():
    tiles = np.full((2, 1, 4, 4), 3e38, "f4")  # every value finite, the float32 sum is inf
    tiles[1, 0, 0, 0] = np.nan
    result = repair_nonfinite(tiles, "zero", max_fraction=0.1)
    assert list(result.kept) == [True, True]
    assert (result.repaired_tiles, result.repaired_values) == (1, 1)
    assert tiles[0].min() == np.float32(3e38) and tiles[1, 0, 0, 0] == 0.0
    assert repair_nonfinite(np.zeros((0, 1, 4, 4), "f4"), "zero", 0.1).kept.shape == (0,)
