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
