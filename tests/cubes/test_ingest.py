"""Ingestion of a raw folder into the store: formats, labels, bad files, reruns."""

import json
import os

import numpy as np
import pytest
from corpus import READABLE_BY_READER, write_broken_files, write_geotiff_cube, write_hdf5_cube, write_npy_cube

from spectral_training.cubes.ingest import IngestionError, IngestionParams, check_dataset_name, ingest_folder, resolve_dataset_folder
from spectral_training.cubes.store import CubeStore

SHAPE = (4, 8, 8)


def params(**overrides) -> IngestionParams:
    values = {"tile_size": 4, "show_progress": False, **overrides}
    return IngestionParams.from_dict(values)


@pytest.fixture
def raw(tmp_path):
    folder = tmp_path / "01_raw" / "scene"
    folder.mkdir(parents=True)
    return folder


def test_hdf5_npy_and_geotiff_are_tiled_into_one_store(raw, tmp_path):
    h5 = write_hdf5_cube(raw / "a.h5", SHAPE, layout="HWC", wavelengths=[450, 550, 650, 750])
    write_npy_cube(raw / "b.npy", SHAPE, layout="CHW", seed=1)
    write_geotiff_cube(raw / "c.tif", SHAPE, nodata=None)
    report, index = ingest_folder(raw, tmp_path / "cubes.h5", params())
    store = CubeStore(tmp_path / "cubes.h5")
    assert report["counts"]["files_ingested"] == 3 and report["rejected"] == []
    assert len(store) == 3 * 4  # four 4x4 tiles per 8x8 image
    assert store.info["wavelengths_nm"] == [450, 550, 650, 750]
    first = index[index.sample_id == "a.h5@0,0"].store_index.item()
    assert np.array_equal(store.read([first])[0], h5.data[:, :4, :4])
    assert {"sample_id", "source_file", "window", "content_hash", "label", "split"} <= set(index.columns)


def test_every_broken_file_is_rejected_with_its_reason_and_the_rest_is_ingested(raw, tmp_path):
    write_hdf5_cube(raw / "good1.h5", SHAPE)
    write_hdf5_cube(raw / "good2.h5", SHAPE, seed=3)
    expected = write_broken_files(raw, SHAPE)
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in raw.iterdir()}
    report, _ = ingest_folder(raw, tmp_path / "cubes.h5", params())
    reasons = {r["file"]: r["reason"] for r in report["rejected"]}
    assert set(reasons) == set(expected)
    for name, fragment in expected.items():
        assert fragment.lower() in reasons[name].lower(), (name, reasons[name])
    assert [e["file"] for e in report["ingested"]] == ["good1.h5", "good2.h5"]
    assert before == {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in raw.iterdir()}
    assert READABLE_BY_READER <= set(reasons)


def test_a_file_with_another_band_count_is_named_with_both_counts(raw, tmp_path):
    write_hdf5_cube(raw / "a.h5", SHAPE)
    write_hdf5_cube(raw / "b.h5", SHAPE, seed=1)
    write_hdf5_cube(raw / "odd.h5", (5, 8, 8))
    report, _ = ingest_folder(raw, tmp_path / "cubes.h5", params())
    [rejected] = report["rejected"]
    assert rejected["file"] == "odd.h5" and "5 bands" in rejected["reason"] and "4" in rejected["reason"]


def test_strict_makes_the_first_problem_fatal(raw, tmp_path):
    write_hdf5_cube(raw / "a.h5", SHAPE)
    (raw / "broken.h5").write_text("not hdf5")
    with pytest.raises(IngestionError, match="broken.h5"):
        ingest_folder(raw, tmp_path / "cubes.h5", params(strict=True))
    assert not (tmp_path / "cubes.h5").exists()


def test_rerun_after_adding_files_appends_only_new_samples_and_keeps_old_splits(raw, tmp_path):
    write_hdf5_cube(raw / "a.h5", SHAPE)
    _, first = ingest_folder(raw, tmp_path / "cubes.h5", params())
    write_hdf5_cube(raw / "b.h5", SHAPE, seed=7)
    report, second = ingest_folder(raw, tmp_path / "cubes.h5", params())
    assert report["counts"]["tiles_appended"] == 4 and report["counts"]["duplicates"] == 4
    assert len(second) == 8
    merged = second.merge(first, on="sample_id", suffixes=("", "_before"))
    assert (merged.split == merged.split_before).all() and len(merged) == 4


def test_exact_duplicate_tiles_across_files_are_dropped_and_counted(raw, tmp_path):
    write_hdf5_cube(raw / "a.h5", SHAPE)
    write_hdf5_cube(raw / "copy.h5", SHAPE)
    report, index = ingest_folder(raw, tmp_path / "cubes.h5", params())
    assert report["counts"]["duplicates"] == 4 and len(index) == 4


def test_class_subfolders_give_image_level_labels(raw, tmp_path):
    for k, cls in enumerate(["forest", "water"]):
        (raw / cls).mkdir()
        write_hdf5_cube(raw / cls / "x.h5", SHAPE, seed=k)
    report, index = ingest_folder(raw, tmp_path / "cubes.h5", params(tile_size=8))
    assert report["class_names"] == ["forest", "water"]
    assert dict(zip(index.source_file, index.label)) == {"forest/x.h5": 0, "water/x.h5": 1}


def test_per_pixel_label_maps_are_kept_and_give_majority_tile_labels(raw, tmp_path):
    cube = write_hdf5_cube(raw / "a.h5", SHAPE, with_labels=True)
    _, index = ingest_folder(raw, tmp_path / "cubes.h5", params())
    store = CubeStore(tmp_path / "cubes.h5")
    row = index[index.sample_id == "a.h5@4,0"].iloc[0]
    tile_map = store.read_label_maps([row.store_index])[0]
    assert np.array_equal(tile_map, cube.labels[4:8, 0:4])
    nonzero = tile_map[tile_map > 0]
    assert row.label == (np.bincount(nonzero).argmax() if nonzero.size else -1)


def test_integer_data_becomes_float32_times_scale(raw, tmp_path):
    cube = write_hdf5_cube(raw / "a.h5", SHAPE, dtype="uint16")
    ingest_folder(raw, tmp_path / "cubes.h5", params(scale=0.5, tile_size=8))
    stored = CubeStore(tmp_path / "cubes.h5").read([0])[0]
    assert stored.dtype == np.float32 and np.allclose(stored, cube.data * 0.5)


def test_a_few_nans_are_repaired_and_counted(raw, tmp_path):
    import h5py

    cube = write_hdf5_cube(raw / "a.h5", (2, 10, 10), layout="CHW", dtype="float32")
    data = cube.data.copy()
    data[0, 0, 0] = np.nan
    with h5py.File(raw / "b.h5", "w") as f:
        f["cube"] = data + 1.0
    report, _ = ingest_folder(raw, tmp_path / "cubes.h5", params(tile_size=10, max_nonfinite_tile=0.05))
    assert report["counts"]["repaired_tiles"] == 1 and report["counts"]["repaired_values"] == 1
    assert np.isfinite(CubeStore(tmp_path / "cubes.h5").read([0, 1])).all()


def test_a_folder_of_only_broken_files_reports_them_without_crashing(raw, tmp_path):
    expected = write_broken_files(raw, SHAPE)
    (raw / "wrong_bands.h5").unlink()  # alone, its band count is the dataset's: it is not broken
    report, index = ingest_folder(raw, tmp_path / "cubes.h5", params())
    assert len(report["rejected"]) == len(expected) - 1 and len(index) == 0
    assert report["counts"]["files_ingested"] == 0
    # all_nan.h5 and corrupt.tif pass the scan (headers only) and are rejected when their pixels
    # are read: the store was made for them, and stays, empty, to keep the record of why.
    assert len(CubeStore(report["store"])) == 0


@pytest.mark.parametrize("name", ["../etc", "a/b", "..", "", ".hidden", "a\\b"])
def test_a_dataset_name_that_is_not_a_plain_folder_name_is_refused(name):
    with pytest.raises(ValueError, match="plain folder name"):
        check_dataset_name(name)


def test_a_missing_dataset_lists_the_datasets_that_exist(tmp_path):
    (tmp_path / "01_raw" / "landcover").mkdir(parents=True)
    (tmp_path / "01_raw" / "floods").mkdir()
    with pytest.raises(FileNotFoundError, match="floods, landcover"):
        resolve_dataset_folder(tmp_path / "01_raw" / "missing")


def test_plan_and_report_are_json_serialisable(raw, tmp_path):
    write_hdf5_cube(raw / "a.h5", SHAPE)
    report, _ = ingest_folder(raw, tmp_path / "cubes.h5", params())
    json.dumps(report)
    assert os.path.exists(report["store"])


def test_a_new_file_with_another_band_count_than_the_store_names_the_store(raw, tmp_path):
    write_hdf5_cube(raw / "a.h5", SHAPE)
    ingest_folder(raw, tmp_path / "cubes.h5", params())
    (raw / "a.h5").unlink()
    write_hdf5_cube(raw / "odd.h5", (5, 8, 8))
    report, index = ingest_folder(raw, tmp_path / "cubes.h5", params())
    [rejected] = report["rejected"]
    assert "5 bands" in rejected["reason"] and str(tmp_path / "cubes.h5") in rejected["reason"]
    assert len(index) == 4
