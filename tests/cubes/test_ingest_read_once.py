"""Ingestion reads each source's pixels once: the scan reads headers, the append rejects late
(non-finite, unreadable) files into the report, and strict mode rolls the store back."""

import os
import threading
from collections import Counter
from pathlib import Path

import h5py
import numpy as np
import pytest
from corpus import make_values, write_geotiff_cube, write_hdf5_cube, write_npy_cube
from PIL import Image

from spectral_training.cubes import plain_reads, readers
from spectral_training.cubes.ingest import (
    IngestionError,
    IngestionParams,
    PendingAppend,
    build_report,
    build_sample_index,
    ingest_folder,
    scan_folder,
)
from spectral_training.cubes.store import CubeStore
from spectral_training.cubes.tiling import cut, tile_windows

SHAPE = (4, 8, 8)
NAN_REASON = ("50.0% of its values are non-finite (NaN/Inf), above max_nonfinite_file=0.25. "
              "Fix: mask or fill the invalid pixels, or raise the threshold")


def params(**overrides) -> IngestionParams:
    return IngestionParams.from_dict({"tile_size": 4, "show_progress": False, **overrides})


@pytest.fixture
def raw(tmp_path):
    folder = tmp_path / "01_raw" / "scene"
    folder.mkdir(parents=True)
    return folder


def write_half_nan(path: Path) -> None:
    data = np.ones(SHAPE, np.float32)
    data[:2] = np.nan
    with h5py.File(path, "w") as f:
        f["cube"] = data


def store_contents(path: Path) -> dict:
    """Every dataset's values and every attribute of a store file."""
    with h5py.File(path, "r") as f:
        return {"datasets": {name: f[name][()] for name in f}, "attrs": dict(f.attrs)}


def assert_same_contents(before: dict, after: dict) -> None:
    assert sorted(after["datasets"]) == sorted(before["datasets"])
    for name, values in before["datasets"].items():
        np.testing.assert_array_equal(after["datasets"][name], values, err_msg=name)
    assert after["attrs"] == before["attrs"]


# ---- late rejection lands in the report ------------------------------------------------------


def test_a_file_with_too_many_nans_is_rejected_with_its_reason_in_the_report(raw, tmp_path):
    write_hdf5_cube(raw / "a.h5", SHAPE)
    write_half_nan(raw / "half_nan.h5")
    plan = scan_folder(raw, params())
    assert [e.file for e in plan.accepted] == ["a.h5", "half_nan.h5"]  # the scan reads no pixel
    report, index = ingest_folder(raw, tmp_path / "cubes.h5", params())
    assert report["rejected"] == [{"file": "half_nan.h5", "reason": NAN_REASON}]
    assert [e["file"] for e in report["ingested"]] == ["a.h5"] and set(index.source_file) == {"a.h5"}
    assert report["counts"]["files_rejected"] == 1 and report["counts"]["files_ingested"] == 1


def test_the_kedro_path_reports_a_late_rejection_from_the_store_record(raw, tmp_path):
    # As the pipeline runs it: the catalog dataset saves the PendingAppend, the report node reads
    # the append's record back from the store's ingestion log.
    write_hdf5_cube(raw / "a.h5", SHAPE)
    write_half_nan(raw / "half_nan.h5")
    store, p = CubeStore(tmp_path / "cubes.h5"), params()
    plan = scan_folder(raw, p, store=store)
    PendingAppend(plan, p).write_into(store)
    report = build_report(plan, store.ingestion_log()[-1], build_sample_index(store, p.splits), store)
    assert report["rejected"] == [{"file": "half_nan.h5", "reason": NAN_REASON}]


def test_the_report_gives_each_ingested_file_its_nonfinite_fraction(raw, tmp_path):
    write_hdf5_cube(raw / "clean.h5", SHAPE)
    data = make_values(SHAPE, seed=9)
    data[0, 0, 0] = np.nan
    with h5py.File(raw / "one_nan.h5", "w") as f:
        f["cube"] = data
    report, _ = ingest_folder(raw, tmp_path / "cubes.h5", params(max_nonfinite_tile=0.05))
    fractions = {e["file"]: e["nonfinite_fraction"] for e in report["ingested"]}
    assert fractions == {"clean.h5": 0.0, "one_nan.h5": round(1 / data.size, 6)}
    assert report["counts"]["repaired_values"] == 1


def test_the_per_tile_check_is_skipped_for_files_known_finite(raw, tmp_path, monkeypatch):
    write_hdf5_cube(raw / "clean.h5", SHAPE)
    data = make_values(SHAPE, seed=9)
    data[0, 0, 0] = np.nan
    with h5py.File(raw / "one_nan.h5", "w") as f:
        f["cube"] = data
    from spectral_training.cubes import ingest_append

    checked = []
    real = ingest_append.repair_nonfinite
    monkeypatch.setattr(ingest_append, "repair_nonfinite", lambda tiles, *a: checked.append(len(tiles)) or real(tiles, *a))
    report, index = ingest_folder(raw, tmp_path / "cubes.h5", params(max_nonfinite_tile=0.05))
    assert checked == [4]  # the four tiles of one_nan.h5 only
    assert len(index) == 8 and np.isfinite(CubeStore(tmp_path / "cubes.h5").read(list(index.store_index))).all()


# ---- strict: a late rejection leaves the store as it was -------------------------------------


def test_strict_with_a_nan_file_found_late_leaves_an_existing_store_unchanged(raw, tmp_path):
    write_hdf5_cube(raw / "a.h5", SHAPE)
    ingest_folder(raw, tmp_path / "cubes.h5", params())
    before = store_contents(tmp_path / "cubes.h5")
    # b.h5 comes first and brings the first label map (a new dataset) and new samples; then the NaN file.
    write_hdf5_cube(raw / "b.h5", SHAPE, with_labels=True, seed=5)
    write_half_nan(raw / "z_half_nan.h5")
    raw_before = {p.name: p.read_bytes() for p in raw.iterdir()}
    with pytest.raises(IngestionError, match="z_half_nan.h5: 50.0% of its values are non-finite"):
        ingest_folder(raw, tmp_path / "cubes.h5", params(strict=True))
    assert_same_contents(before, store_contents(tmp_path / "cubes.h5"))
    assert len(CubeStore(tmp_path / "cubes.h5")) == 4
    assert {p.name: p.read_bytes() for p in raw.iterdir()} == raw_before
    # and the store still takes the next run as usual
    (raw / "z_half_nan.h5").unlink()
    report, index = ingest_folder(raw, tmp_path / "cubes.h5", params(strict=True))
    assert report["counts"]["tiles_appended"] == 4 and len(index) == 8


def test_strict_with_a_nan_file_found_late_leaves_no_new_store_behind(raw, tmp_path):
    write_hdf5_cube(raw / "a.h5", SHAPE)
    write_half_nan(raw / "z_half_nan.h5")
    with pytest.raises(IngestionError, match="z_half_nan.h5"):
        ingest_folder(raw, tmp_path / "cubes.h5", params(strict=True))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["01_raw"]


def test_strict_with_pixels_that_cannot_be_read_rolls_back_too(raw, tmp_path):
    write_hdf5_cube(raw / "a.h5", SHAPE)
    ingest_folder(raw, tmp_path / "cubes.h5", params())
    before = store_contents(tmp_path / "cubes.h5")
    write_npy_cube(raw / "b.npy", SHAPE, seed=2)
    write_geotiff_cube(raw / "c.tif", SHAPE)
    content = (raw / "c.tif").read_bytes()
    (raw / "c.tif").write_bytes(content[: len(content) // 2])  # the header survives, the strips do not
    with pytest.raises(IngestionError, match="c.tif: the GeoTIFF is corrupt"):
        ingest_folder(raw, tmp_path / "cubes.h5", params(strict=True))
    assert_same_contents(before, store_contents(tmp_path / "cubes.h5"))


def test_without_strict_an_unreadable_file_is_rejected_with_the_readers_reason(raw, tmp_path):
    write_hdf5_cube(raw / "a.h5", SHAPE)
    write_geotiff_cube(raw / "c.tif", SHAPE)
    content = (raw / "c.tif").read_bytes()
    (raw / "c.tif").write_bytes(content[: len(content) // 2])
    report, index = ingest_folder(raw, tmp_path / "cubes.h5", params())
    [rejected] = report["rejected"]
    assert rejected["file"] == "c.tif" and rejected["reason"].startswith("the GeoTIFF is corrupt")
    assert "Fix: export or download the file again." in rejected["reason"] and len(index) == 4


# ---- each source's pixels are read once per ingestion ----------------------------------------


def test_each_source_file_is_read_once_per_ingestion(raw, tmp_path, monkeypatch):
    write_hdf5_cube(raw / "a.h5", SHAPE, with_labels=True)
    write_npy_cube(raw / "b.npy", SHAPE, seed=1)
    write_geotiff_cube(raw / "c.tif", SHAPE, nodata=None, seed=2)
    Image.fromarray(np.full((6, 10, 3), 90, np.uint8)).save(raw / "d.png")  # 3 bands: rejected by the vote
    write_half_nan(raw / "e.h5")
    reads: Counter = Counter()
    for name in ("_read_hdf5", "_read_npy", "_read_geotiff", "_read_photo"):
        real = getattr(readers, name)
        monkeypatch.setattr(readers, name, lambda path, *a, _real=real, **k: reads.update([Path(path).name]) or _real(path, *a, **k))
    from spectral_training.cubes import cube_headers, ingest_append, photos

    for name in ("read_plain_tiles", "read_plain_cube"):  # e.h5: plain bytes, read without HDF5
        real = getattr(ingest_append, name)
        monkeypatch.setattr(ingest_append, name, lambda path, *a, _real=real, **k: reads.update([Path(path).name]) or _real(path, *a, **k))

    monkeypatch.setattr(cube_headers, "read_photo", lambda *a, **k: pytest.fail("the header decoded a photo"))
    monkeypatch.setattr(photos.Image.Image, "load", lambda *a, **k: pytest.fail("the scan decoded a photo"))

    report, _ = ingest_folder(raw, tmp_path / "cubes.h5", params())
    assert reads == Counter({"a.h5": 1, "b.npy": 1, "c.tif": 1, "e.h5": 1})  # d.png: header only
    assert {r["file"] for r in report["rejected"]} == {"d.png", "e.h5"}
    reads.clear()
    ingest_folder(raw, tmp_path / "cubes.h5", params())  # a rerun: all duplicates, read once again
    assert reads == Counter({"a.h5": 1, "b.npy": 1, "c.tif": 1, "e.h5": 1})


# ---- reading a source: plain bytes for contiguous HDF5, found by the scan ----------------------
@pytest.mark.parametrize("dtype", ["float32", "uint16", "int16"])
@pytest.mark.parametrize("chunks", [None, (1, 8, 8)])
def test_contiguous_hdf5_read_as_plain_bytes_equals_h5py(tmp_path, dtype, chunks):
    values = (np.random.default_rng(0).uniform(0, 1000, size=(3, 8, 8))).astype(dtype)
    path = tmp_path / "cube.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("cube", data=values, chunks=chunks)
    with h5py.File(path, "r") as f:
        plain = readers._plain_hdf5_bytes(f["cube"])
        assert (plain is None) == (chunks is not None)  # chunked: read by h5py
        if plain is not None:
            assert plain.dtype == values.dtype and np.array_equal(plain, values)
    data = readers.read_cube(path).data
    assert data.dtype == np.float32 and np.array_equal(data, values.astype(np.float32))


@pytest.mark.parametrize("dtype,scale", [("float32", None), ("uint16", 0.5), ("int16", None), ("float64", None),
                                         ("float16", None)])
def test_pixels_the_scan_found_plain_are_read_without_hdf5_as_the_reader_reads_them(tmp_path, monkeypatch, dtype, scale):
    values = np.random.default_rng(1).uniform(0, 1000, size=(3, 10, 12)).astype(dtype)
    if values.dtype.kind == "f":
        values[1, 2, 3], values[2, 9, 11] = np.nan, np.inf
    path = tmp_path / "cube.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("cube", data=values)
    header = readers.read_cube_header(path)
    assert header.plain_pixels is not None and header.plain_pixels.dtype == dtype
    want = readers.read_cube(path, scale=scale).data
    data = plain_reads.read_plain_cube(path, header.shape, header.plain_pixels, scale)
    if dtype == "float64":
        assert data is None  # wider than the result: read_cube converts it in slabs
    else:
        assert data.dtype == np.float32 and np.array_equal(data, want, equal_nan=True)
    windows = tile_windows(10, 12, 4, 4)  # the edge windows overlap their neighbours
    plane_bytes = 10 * 12 * np.dtype(dtype).itemsize
    for slab_bytes in (plane_bytes, 2 * plane_bytes, 1 << 20):  # 3 slabs, 2 (one short), 1
        monkeypatch.setattr(plain_reads, "SLAB_BYTES", slab_bytes)
        read = plain_reads.read_plain_tiles(path, header.shape, header.plain_pixels, windows, scale)
        if dtype == "float16":
            assert read is None  # the compiled copy takes integers, float32 and float64
            return
        tiles, nonfinite = read
        assert tiles.dtype == np.float32 and np.array_equal(tiles, cut(want, windows), equal_nan=True)
        assert nonfinite == np.count_nonzero(~np.isfinite(want))  # each pixel once, overlaps or not


def test_a_plain_read_of_a_file_changed_since_the_scan_returns_none(tmp_path):
    path = tmp_path / "cube.h5"
    with h5py.File(path, "w") as f:
        f["cube"] = np.ones((2, 4, 4), np.float32)
    header = readers.read_cube_header(path)
    with h5py.File(path, "a") as f:
        f.attrs["touched"] = 1  # same pixels, but the file was written since
    os.utime(path, ns=(header.plain_pixels.file_mtime_ns + 10**9,) * 2)
    assert plain_reads.read_plain_cube(path, header.shape, header.plain_pixels) is None
    assert plain_reads.read_plain_tiles(path, header.shape, header.plain_pixels, tile_windows(4, 4, 2, 2)) is None


@pytest.mark.parametrize("stride", [4, 2])
def test_straight_and_overlapping_tiles_store_what_the_reader_and_cut_give(raw, tmp_path, stride):
    values = np.random.default_rng(3).normal(size=(3, 10, 12)).astype(np.float32)
    with h5py.File(raw / "a.h5", "w") as f:
        f["cube"] = values
    _, index = ingest_folder(raw, tmp_path / "cubes.h5", params(stride=stride))
    store = CubeStore(tmp_path / "cubes.h5")
    windows = store.column("window")
    assert len(index) == len(tile_windows(10, 12, 4, stride))
    assert np.array_equal(store.read(np.arange(len(windows))), cut(values, windows))


@pytest.mark.parametrize("layout", ["chunked", "gzip", "HWC"])
def test_pixels_that_are_not_plain_chw_bytes_have_no_plain_location(tmp_path, layout):
    values = np.ones((3, 8, 8) if layout != "HWC" else (8, 8, 3), np.float32)
    path = tmp_path / "cube.h5"
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("cube", data=values, chunks=(1, 8, 8) if layout == "chunked" else None,
                              compression="gzip" if layout == "gzip" else None)
        if layout == "HWC":
            ds.attrs["layout"] = "HWC"
    assert readers.read_cube_header(path).plain_pixels is None


def test_a_file_changed_after_the_scan_is_read_again_through_its_reader(raw, tmp_path):
    old = np.ones(SHAPE, np.float32)
    with h5py.File(raw / "a.h5", "w") as f:
        f["cube"] = old
    plan = scan_folder(raw, params())
    [entry] = plan.accepted
    assert entry.plain_pixels is not None
    plan = type(plan).from_dict(plan.to_dict())  # as the pipeline passes it: through JSON
    assert plan.accepted[0].plain_pixels == entry.plain_pixels
    new = np.arange(np.prod(SHAPE), dtype=np.float32).reshape(SHAPE)
    with h5py.File(raw / "a.h5", "w") as f:  # rewritten: another layout, so the old offset is wrong
        f.create_dataset("cube", data=new, chunks=(1, 4, 4))
    store = CubeStore(tmp_path / "cubes.h5")
    record = PendingAppend(plan, params()).write_into(store)
    windows = store.column("window")
    assert record["appended"] == 4
    for tile, (r, c, h, w) in zip(store.read(np.arange(4)), windows):
        assert np.array_equal(tile, new[:, r : r + h, c : c + w])


def test_a_file_truncated_after_the_scan_is_rejected_with_its_reason(raw, tmp_path):
    write_hdf5_cube(raw / "a.h5", SHAPE)
    write_hdf5_cube(raw / "b.h5", SHAPE, seed=1)
    plan = scan_folder(raw, params())
    content = (raw / "b.h5").read_bytes()
    (raw / "b.h5").write_bytes(content[: len(content) // 2])
    store = CubeStore(tmp_path / "cubes.h5")
    record = PendingAppend(plan, params()).write_into(store)
    [failed] = record["failed_files"]
    assert failed["file"] == "b.h5" and "Fix:" in failed["reason"]
    assert record["appended"] == 4  # a.h5's tiles


def test_a_store_that_refuses_the_tiles_stops_the_reading_thread_at_once(raw, tmp_path):
    from spectral_training.cubes.ingest_append import PRODUCER_THREAD
    from spectral_training.cubes.store_schema import StoreSchemaError

    for i in range(6):
        write_hdf5_cube(raw / f"c{i}.h5", SHAPE, seed=i)
    ingest_folder(raw, tmp_path / "cubes.h5", params())  # a store of 4 px tiles
    try:
        ingest_folder(raw, tmp_path / "cubes.h5", params(tile_size=2))
    except StoreSchemaError as error:
        # The error is held, as a caller (Kedro) holds it: its traceback keeps the frames that
        # iterated the batches alive, and still the thread is gone.
        assert "do not fit the store" in str(error)
        assert not any(t.name == PRODUCER_THREAD for t in threading.enumerate())
    else:
        pytest.fail("tiles of another size were appended")
