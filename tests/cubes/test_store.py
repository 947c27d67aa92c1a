"""The HDF5 cube store: append, de-duplication, reads, schema checks."""

import h5py
import numpy as np
import pytest

from spectral_training.cubes.store import CubeStore, StoreSchemaError, TileBatch


def _batch(values: np.ndarray, source: str = "a.h5", prefix: str = "a") -> TileBatch:
    k = len(values)
    return TileBatch(
        cubes=values, sample_ids=[f"{prefix}{i}" for i in range(k)], source_file=source,
        windows=np.tile(np.array([[0, 0, 4, 4]], np.int32), (k, 1)), labels=np.full(k, -1, np.int64),
    )


@pytest.fixture
def store(tmp_path):
    s = CubeStore(tmp_path / "cubes.h5")
    s.create(num_bands=3, tile_size=4, band_names=None, wavelengths_nm=[450.0, 550.0, 650.0])
    return s


def test_layout_is_chunked_one_sample_per_chunk_and_uncompressed(store):
    store.append([_batch(np.random.rand(2, 3, 4, 4).astype("f4"))])
    with h5py.File(store.path) as f:
        assert f["cubes"].chunks == (1, 3, 4, 4)
        assert f["cubes"].maxshape == (None, 3, 4, 4)
        assert f["cubes"].compression is None
        assert f["labels"].dtype == np.int64


def test_append_then_read_back_in_any_order(store):
    values = np.random.rand(5, 3, 4, 4).astype("f4")
    store.append([_batch(values)])
    assert np.array_equal(store.read([4, 0, 2]), values[[4, 0, 2]])
    assert list(store.column("sample_ids")) == [f"a{i}" for i in range(5)]


def test_exact_duplicates_are_not_appended_twice(store):
    values = np.random.rand(3, 3, 4, 4).astype("f4")
    first = store.append([_batch(values)])
    again = store.append([_batch(values, source="b.h5", prefix="b")])
    assert (first.appended, again.appended, again.duplicates) == (3, 0, 3)
    assert len(store) == 3
    assert [e["appended"] for e in store.ingestion_log()] == [3, 0]


def test_tiles_of_another_shape_are_refused_with_the_store_shape(store):
    with pytest.raises(StoreSchemaError, match=r"\(3, 4, 4\)"):
        store.append([_batch(np.zeros((1, 5, 4, 4), "f4"))])


def test_compressed_store_reads_the_same_values(tmp_path):
    s = CubeStore(tmp_path / "z.h5")
    s.create(num_bands=3, tile_size=4, band_names=None, wavelengths_nm=None, compression="gzip-4")
    values = np.random.rand(4, 3, 4, 4).astype("f4")
    s.append([_batch(values)])
    assert s.info["compression"] == "gzip-4"
    assert np.array_equal(s.read([3, 1]), values[[3, 1]])


def test_missing_store_says_to_run_ingestion(tmp_path):
    with pytest.raises(FileNotFoundError, match="ingestion"):
        len(CubeStore(tmp_path / "nope.h5"))
