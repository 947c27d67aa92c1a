"""Spatially disjoint (block) splits: no pixel shared between splits, stable when files are added."""

import logging

import numpy as np
import pytest
from corpus import write_hdf5_cube

from spectral_training.cubes.ingest import IngestionParams, ingest_folder
from spectral_training.cubes.splits import (
    BUFFER,
    block_key,
    block_split_of,
    parse_sample_id,
    split_of,
    validate_block_px,
    validate_fractions,
)

FRACTIONS = validate_fractions({"train": 0.5, "val": 0.25, "test": 0.25})
SCENE = (2, 64, 64)


def params(**overrides) -> IngestionParams:
    values = {"tile_size": 8, "stride": 4, "show_progress": False, "splits": dict(FRACTIONS), **overrides}
    return IngestionParams.from_dict(values)


def footprints(index, split):
    rows = index[index.split == split]
    return [(int(r), int(c)) for r, c in zip(rows.row, rows.col)]


def overlaps(a, b, tile):
    (r1, c1), (r2, c2) = a, b
    return abs(r1 - r2) < tile and abs(c1 - c2) < tile


@pytest.fixture
def raw(tmp_path):
    folder = tmp_path / "01_raw" / "scene"
    folder.mkdir(parents=True)
    return folder


def test_block_split_puts_no_pixel_of_one_scene_in_two_splits(raw, tmp_path):
    write_hdf5_cube(raw / "scene.h5", SCENE, layout="CHW")
    _, index = ingest_folder(raw, tmp_path / "cubes.h5", params(split_block_px=16))
    assert {"train", "val", "test"} <= set(index.split)  # the test would prove nothing otherwise
    for first, second in [("train", "test"), ("train", "val"), ("val", "test")]:
        for a in footprints(index, first):
            assert not any(overlaps(a, b, 8) for b in footprints(index, second)), (first, a, second)


def test_the_per_tile_hash_does_leak_overlapping_tiles(raw, tmp_path):
    # The problem the block split solves: with stride < tile_size, train and test tiles overlap.
    write_hdf5_cube(raw / "scene.h5", SCENE, layout="CHW")
    _, index = ingest_folder(raw, tmp_path / "cubes.h5", params())
    train, test = footprints(index, "train"), footprints(index, "test")
    assert any(overlaps(a, b, 8) for a in test for b in train)


def test_block_split_of_old_samples_is_unchanged_when_a_file_is_added(raw, tmp_path):
    write_hdf5_cube(raw / "a.h5", SCENE, layout="CHW")
    _, first = ingest_folder(raw, tmp_path / "cubes.h5", params(split_block_px=16))
    write_hdf5_cube(raw / "b.h5", SCENE, layout="CHW", seed=5)
    _, second = ingest_folder(raw, tmp_path / "cubes.h5", params(split_block_px=16))
    assert len(second) == 2 * len(first)
    merged = first.merge(second, on="sample_id", suffixes=("_before", ""))
    assert len(merged) == len(first) and (merged.split == merged.split_before).all()


def test_tiles_inside_one_block_share_its_split():
    # tile 4, block 16: tiles starting at 0, 4, 8 or 12 end by pixel 15, inside block (0, 0).
    inside = [f"scene.h5@{r},{c}" for r in (0, 4, 8, 12) for c in (0, 4, 8, 12)]
    splits = {block_split_of(sid, FRACTIONS, 16, 4) for sid in inside}
    assert len(splits) == 1 and splits != {BUFFER}
    assert splits == {split_of(block_key("scene.h5", 0, 0), FRACTIONS)}


def test_a_tile_reaching_into_a_block_of_another_split_is_buffer():
    # Find two horizontally neighbouring blocks of different splits, then a tile over their border.
    col = next(c for c in range(100) if split_of(block_key("s.h5", 0, c), FRACTIONS)
               != split_of(block_key("s.h5", 0, c + 1), FRACTIONS))
    border_tile = f"s.h5@0,{col * 16 + 12}"  # columns col*16+12 .. col*16+19
    assert block_split_of(border_tile, FRACTIONS, 16, 8) == BUFFER
    assert block_split_of(f"s.h5@0,{col * 16}", FRACTIONS, 16, 8) == split_of(block_key("s.h5", 0, col), FRACTIONS)


def test_block_split_depends_on_the_file():
    by_file = {block_split_of(f"file_{i}.h5@0,0", FRACTIONS, 64, 8) for i in range(200)}
    assert {"train", "val", "test"} == by_file


@pytest.mark.parametrize(
    ("sample_id", "parsed"),
    [
        ("a/scene.h5@8,16", ("a/scene.h5", 8, 16)),
        ("icon@2x.png@0,0", ("icon@2x.png", 0, 0)),
        ("cats/tabby.jpg", ("cats/tabby.jpg", None, None)),
        ("odd@name", ("odd@name", None, None)),
        ("x.h5@1,2\n", ("x.h5@1,2\n", None, None)),
    ],
)
def test_sample_ids_are_parsed_robustly(sample_id, parsed):
    assert parse_sample_id(sample_id) == parsed


def test_an_id_without_a_window_is_split_by_its_file():
    assert block_split_of("cats/tabby.jpg", FRACTIONS, 32, 32) == split_of(block_key("cats/tabby.jpg", 0, 0), FRACTIONS)
    assert block_split_of("cats/tabby.jpg", FRACTIONS, 32, 32) == block_split_of("cats/tabby.jpg@0,0", FRACTIONS, 32, 32)


@pytest.mark.parametrize("bad", [0, -16, 2.5, True, "64"])
def test_a_block_that_is_not_a_positive_integer_is_refused(bad):
    with pytest.raises(ValueError, match="ingestion.split_block_px"):
        validate_block_px(bad)
    with pytest.raises(ValueError, match="ingestion.split_block_px"):
        params(split_block_px=bad)


def test_a_block_smaller_than_a_tile_is_allowed_with_a_warning(raw, tmp_path, caplog):
    write_hdf5_cube(raw / "scene.h5", (2, 16, 16), layout="CHW")
    with caplog.at_level(logging.WARNING):
        _, index = ingest_folder(raw, tmp_path / "cubes.h5", params(split_block_px=4))
    assert "smaller than the tile size 8" in caplog.text and "32 (4 x tile_size)" in caplog.text
    assert set(index.split) <= {"train", "val", "test", BUFFER}


def test_without_a_block_the_split_is_the_per_tile_hash(raw, tmp_path):
    write_hdf5_cube(raw / "scene.h5", (2, 16, 16), layout="CHW")
    _, index = ingest_folder(raw, tmp_path / "cubes.h5", params())
    assert list(index.split) == [split_of(sid, FRACTIONS) for sid in index.sample_id]
    assert BUFFER not in set(index.split)


def test_photos_under_a_block_split_are_split_per_file_and_never_buffered(tmp_path):
    from PIL import Image

    raw = tmp_path / "01_raw" / "pets"
    for k, name in enumerate(("cats", "dogs")):
        (raw / name).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(np.full((10, 12, 3), 20 * i + k, np.uint8)).save(raw / name / f"{i}.png")
    _, index = ingest_folder(raw, tmp_path / "cubes.h5", params(split_block_px=32))
    assert len(index) == 12 and BUFFER not in set(index.split)
    for sid, split in zip(index.sample_id, index.split):
        assert split == split_of(block_key(parse_sample_id(sid)[0], 0, 0), FRACTIONS)
