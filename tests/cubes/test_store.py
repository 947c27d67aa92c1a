"""The HDF5 cube store: append, de-duplication, reads, schema checks."""

import os

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


# ---- the plain-read fast path (os.preadv at cached chunk offsets) and its read handle ----------
def _values(k: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(1000, 50, size=(k, 3, 4, 4)).astype("f4")


def _h5py_read(path, indices) -> np.ndarray:
    with h5py.File(path, "r") as f:
        return np.stack([f["cubes"][int(i)] for i in indices])


def test_fast_reads_equal_h5py_in_any_order_with_repeats_and_negative_indices(store):
    store.append([_batch(_values(9))])
    order = [8, 0, 3, 4, 5, 3, 1, -1]
    assert store._sample_reader().table[3] is not None  # the uncompressed store takes the fast path
    assert np.array_equal(store.read(order), _h5py_read(store.path, [i % 9 for i in order]))
    assert np.array_equal(store.read(np.arange(9)), _h5py_read(store.path, range(9)))  # one run of adjacent chunks
    assert np.array_equal(store.read_one(4), _h5py_read(store.path, [4])[0])
    assert store.read([]).shape == (0, 3, 4, 4)


def test_reads_copy_from_the_mapped_file_and_fall_back_to_preadv_where_it_cannot_be_mapped(store, monkeypatch):
    import mmap

    values = _values(9)
    store.append([_batch(values)])
    order = [8, 0, 3, 4, 5, 3, 1, -1]
    assert isinstance(store._sample_reader().table[4], np.ndarray)  # the file is mapped
    assert np.array_equal(store.read(order), values[order])
    assert np.array_equal(store.read_one(7), values[7])

    def refuse(*args, **kwargs):
        raise OSError("mmap refused (as on a filesystem without mapping support)")

    monkeypatch.setattr(mmap, "mmap", refuse)
    unmapped = CubeStore(store.path)
    assert isinstance(unmapped._sample_reader().table[4], int)  # a descriptor: preadv
    assert np.array_equal(unmapped.read(order), values[order])
    assert np.array_equal(unmapped.read_one(7), values[7])


def test_a_store_that_grows_is_mapped_again_and_reads_the_new_samples(store):
    first, second = _values(4, seed=1), _values(5, seed=2)
    store.append([_batch(first)])
    assert np.array_equal(store.read([3, 0]), first[[3, 0]])
    store.append([_batch(second, prefix="more")])
    both = np.concatenate([first, second])
    assert np.array_equal(store.read([8, 0, 5]), both[[8, 0, 5]])
    assert np.array_equal(store.read_one(6), both[6])


@pytest.mark.parametrize("bands, size, interval", [(64, 32, 256 * 1024), (30, 64, 32 * 1024), (13, 64, 16 * 1024)])
def test_sample_chunks_start_on_the_alignment_their_size_allows(tmp_path, bands, size, interval):
    from spectral_training.cubes.store_reader import _chunk_offsets
    from spectral_training.cubes.store_schema import write_alignment

    chunk_bytes = bands * size * size * 4
    assert write_alignment(chunk_bytes)["alignment_interval"] == interval
    s = CubeStore(tmp_path / "aligned.h5")
    s.create(num_bands=bands, tile_size=size, band_names=None, wavelengths_nm=None)
    values = np.random.default_rng(0).normal(size=(3, bands, size, size)).astype("f4")
    s.append([_batch(values)])
    with h5py.File(s.path, "r") as f:
        offsets = _chunk_offsets(f["cubes"].id, 3, chunk_bytes)
    assert (offsets % interval == 0).all() and (offsets > 0).all()
    assert np.array_equal(s.read([2, 0, 1]), values[[2, 0, 1]])


def test_reads_fill_a_given_buffer_even_a_non_contiguous_one(store):
    values = _values(5)
    store.append([_batch(values)])
    out = np.zeros((3, 3, 4, 4), "f4")
    assert store.read([4, 0, 2], out=out) is out and np.array_equal(out, values[[4, 0, 2]])
    strided = np.zeros((3, 6, 4, 4), "f4")[:, ::2]
    assert np.array_equal(store.read([1, 2, 3], out=strided), values[1:4]) and np.array_equal(strided, values[1:4])
    one = np.zeros((3, 4, 4), "f4")
    assert store.read_one(2, out=one) is one and np.array_equal(one, values[2])
    with pytest.raises(ValueError, match="out has shape"):
        store.read([0], out=np.zeros((2, 3, 4, 4), "f4"))


def test_an_index_out_of_range_is_an_index_error(store):
    store.append([_batch(_values(3))])
    with pytest.raises(IndexError, match="out of range"):
        store.read([0, 3])
    with pytest.raises(IndexError, match="out of range"):
        store.read_one(-4)


def test_readers_see_samples_appended_after_their_first_read(store):
    first, second = _values(3, seed=1), _values(4, seed=2)
    store.append([_batch(first)])
    other = CubeStore(store.path)  # another handle on the same file, opened before the append
    assert np.array_equal(other.read([2]), first[[2]]) and np.array_equal(store.read([0]), first[[0]])
    store.append([_batch(second, prefix="b")])
    assert store._reader is None  # the append closed this handle's reader
    everything = np.concatenate([first, second])
    assert np.array_equal(store.read(np.arange(7)), everything)
    assert np.array_equal(other.read([6, 0, 3]), everything[[6, 0, 3]])  # refreshed: index beyond its count
    assert np.array_equal(other.read_one(5), everything[5])
    assert np.array_equal(store.read(np.arange(7)), _h5py_read(store.path, range(7)))


def test_a_store_created_again_at_the_same_path_is_reopened(store):
    store.append([_batch(_values(3, seed=1))])
    reader = CubeStore(store.path)
    reader.read([0])
    fresh = CubeStore(store.path)
    fresh.create(num_bands=3, tile_size=4, band_names=None, wavelengths_nm=None)
    values = _values(3, seed=5)
    fresh.append([_batch(values)])
    assert np.array_equal(reader.read([0, 1, 2]), values)


def test_the_read_handle_holds_no_hdf5_handle_so_writers_can_open_the_file(store):
    store.append([_batch(_values(2))])
    store.read([0, 1])
    assert store._reader is not None
    with h5py.File(store.path, "r+") as f:  # HDF5 refuses r+ while the same process holds the file "r"
        f.attrs["touched"] = 1


def test_close_and_context_manager_release_the_handle_and_reads_reopen(store):
    values = _values(3)
    store.append([_batch(values)])
    with CubeStore(store.path) as s:
        assert np.array_equal(s.read([1]), values[[1]])
        assert s._reader is not None
    assert s._reader is None
    store.read([0])
    store.close()
    assert store._reader is None
    assert np.array_equal(store.read([2]), values[[2]])


def test_a_pickled_store_has_no_handle_and_reads(store):
    import pickle

    values = _values(3)
    store.append([_batch(values)])
    store.read([0])
    copy = pickle.loads(pickle.dumps(store))
    assert copy.path == store.path and copy._reader is None
    assert np.array_equal(copy.read([2, 0]), values[[2, 0]])


def _read_in_child(store, conn) -> None:
    batch, one = store.read([2, 0]), store.read_one(1)
    conn.send((os.getpid(), store._reader_pid, batch, one))
    conn.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_worker_opens_its_own_handle_and_the_parent_keeps_reading(store):
    import multiprocessing

    values = _values(3)
    store.append([_batch(values)])
    store.read([0])
    parent_fd = store._sample_reader().fd
    ctx = multiprocessing.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_read_in_child, args=(store, send))
    child.start()
    pid, reader_pid, batch, one = receive.recv()
    child.join(timeout=30)
    assert child.exitcode == 0 and pid != os.getpid()
    assert reader_pid == pid  # the child opened a handle of its own
    assert np.array_equal(batch, values[[2, 0]]) and np.array_equal(one, values[1])
    # The child closed its copy of the descriptor; the parent's handle is untouched.
    assert store._sample_reader().fd == parent_fd and np.array_equal(store.read([1]), values[[1]])


def test_read_samples_fast_path_and_fallbacks_equal_h5py(store):
    from spectral_training.cubes.store import read_samples

    values = _values(6)
    store.append([_batch(values)])
    order = [5, 1, 1, 0, 4]
    with h5py.File(store.path, "r") as f:  # read-only: preadv at cached offsets
        assert np.array_equal(read_samples(f["cubes"], order), values[order])
        assert np.array_equal(read_samples(f["cubes"], np.arange(6)), values)
    with h5py.File(store.path, "r+") as f:  # writable: read_direct_chunk, as before
        assert np.array_equal(read_samples(f["cubes"], order), values[order])
    with h5py.File(store.path, "r") as f:  # a new open: new cache key, same answer
        assert np.array_equal(read_samples(f["cubes"], order), values[order])


def test_an_unallocated_chunk_reads_as_the_fill_value(store):
    from spectral_training.cubes.store import read_samples

    values = _values(3)
    store.append([_batch(values)])
    with h5py.File(store.path, "r+") as f:
        f["cubes"].resize(4, axis=0)  # sample 3 never written: no chunk on disk
    want = np.concatenate([values, np.zeros((1, 3, 4, 4), "f4")])
    assert np.array_equal(CubeStore(store.path).read([3, 0, 1, 2, 3]), want[[3, 0, 1, 2, 3]])
    assert np.array_equal(CubeStore(store.path).read([0, 3, 1, 2]), want[[0, 3, 1, 2]])  # a gap inside a run
    assert np.array_equal(CubeStore(store.path).read_one(3), want[3])
    with h5py.File(store.path, "r") as f:
        assert np.array_equal(read_samples(f["cubes"], [2, 3]), want[[2, 3]])


def test_a_big_endian_store_is_read_through_h5py_with_correct_values(tmp_path):
    from spectral_training.cubes.store import read_samples

    path = tmp_path / "be.h5"
    CubeStore(path).create(num_bands=3, tile_size=4, band_names=None, wavelengths_nm=None)
    values = _values(4)
    with h5py.File(path, "r+") as f:
        del f["cubes"]
        f.create_dataset("cubes", data=values.astype(">f4"), maxshape=(None, 3, 4, 4), chunks=(1, 3, 4, 4))
    s = CubeStore(path)
    assert s._sample_reader().table[3] is None  # not plain: h5py converts the byte order
    assert np.array_equal(s.read([3, 0]), values[[3, 0]])
    with h5py.File(path, "r") as f:
        assert np.array_equal(read_samples(f["cubes"], [1, 2]), values[[1, 2]])


def test_hashes_are_computed_lazily_and_equal_the_content_hash_of_each_tile(store):
    from spectral_training.cubes.store import content_hash

    values = _values(5)
    batch = _batch(values)
    assert batch._hashes is None  # nothing hashed yet
    store.append([batch])
    assert batch.hashes == [content_hash(t) for t in values]
    given = TileBatch(cubes=values[:2], sample_ids=["x", "y"], source_file="s", windows=np.zeros((2, 4), np.int32),
                      labels=np.full(2, -1), hashes=["h1", "h2"])
    assert given.hashes == ["h1", "h2"]
    with h5py.File(store.path) as f:
        assert [h.decode() for h in f["content_hash"][()]] == batch.hashes


def test_a_new_store_records_its_hash_algorithm_and_hashes_with_it(store):
    import xxhash

    from spectral_training.cubes.store_schema import HASH_ALGORITHM

    values = _values(3)
    store.append([_batch(values)])
    assert store.info["hash_algorithm"] == HASH_ALGORITHM == "xxh3-128"
    with h5py.File(store.path) as f:
        assert f.attrs["hash_algorithm"] == "xxh3-128"
        assert [h.decode() for h in f["content_hash"][()]] == [xxhash.xxh3_128_hexdigest(t.tobytes()) for t in values]


def _old_sha256_store(path):
    """A store as versions before XXH3 wrote it: the algorithm recorded as sha256-128."""
    store = CubeStore(path)
    store.create(num_bands=3, tile_size=4, band_names=None, wavelengths_nm=None)
    with h5py.File(path, "r+") as f:
        f.attrs["hash_algorithm"] = "sha256-128"
    return store


def test_an_old_store_keeps_its_recorded_hash_algorithm_and_never_mixes_two(tmp_path):
    import hashlib

    store = _old_sha256_store(tmp_path / "old.h5")
    values = _values(4)
    store.append([_batch(values[:2])])
    later = _batch(values, source="b.h5", prefix="b")
    later.hashes  # hashed before the append with the new default: must be hashed again with the store's
    summary = store.append([later])
    assert (summary.appended, summary.duplicates) == (2, 2)  # de-duplication still finds the old samples
    assert store.info["hash_algorithm"] == "sha256-128"
    with h5py.File(store.path) as f:
        assert f.attrs["hash_algorithm"] == "sha256-128"
        want = [hashlib.sha256(t.tobytes()).hexdigest()[:32] for t in values]
        assert [h.decode() for h in f["content_hash"][()]] == want


def test_a_store_without_the_attribute_reads_as_sha256_and_an_unknown_one_is_refused(tmp_path):
    store = _old_sha256_store(tmp_path / "older.h5")
    with h5py.File(store.path, "r+") as f:
        del f.attrs["hash_algorithm"]
    assert store.info["hash_algorithm"] == "sha256-128"
    with h5py.File(store.path, "r+") as f:
        f.attrs["hash_algorithm"] = "md5-from-the-future"
    with pytest.raises(StoreSchemaError, match="md5-from-the-future.*known"):
        store.append([_batch(_values(1))])


def test_batches_with_some_duplicates_are_written_in_order_without_gaps(store):
    values = _values(12, seed=3)
    batches = [_batch(values[i : i + 3], source=f"f{i}", prefix=f"p{i}_") for i in range(0, 12, 3)]
    batches.append(_batch(values[:3], source="again", prefix="dup"))  # all duplicates
    mixed = np.stack([values[0], _values(1, seed=9)[0], values[5], _values(1, seed=9)[0]])  # dup, new, dup, dup in batch
    batches.append(_batch(mixed, source="mixed", prefix="m"))
    summary = store.append(batches)
    assert (summary.appended, summary.duplicates) == (13, 6)
    assert summary.duplicate_ids[-3:] == ["m0", "m2", "m3"]
    want = np.concatenate([values, mixed[1:2]])
    assert np.array_equal(store.read(np.arange(13)), want) and np.array_equal(_h5py_read(store.path, range(13)), want)
    assert list(store.column("sample_ids")) == [f"p{i}_{j}" for i in range(0, 12, 3) for j in range(3)] + ["m1"]
    with h5py.File(store.path) as f:
        assert {f[name].shape[0] for name in ("cubes", "labels", "sample_ids", "content_hash", "window")} == {13}


def test_a_producer_that_fails_midway_leaves_the_batches_before_it_written(store):
    values = _values(4)

    def batches():
        yield _batch(values[:2])
        raise RuntimeError("source vanished")

    with pytest.raises(RuntimeError, match="source vanished"):
        store.append(batches())
    with h5py.File(store.path) as f:
        assert f["cubes"].shape[0] == 2 and np.array_equal(f["cubes"][()], values[:2])
        # their provenance was written too, although it is kept back to be written in groups
        assert {f[name].shape[0] for name in ("labels", "sample_ids", "content_hash", "source_file", "window")} == {2}
    assert list(store.column("sample_ids")) == ["a0", "a1"]


@pytest.mark.parametrize("group_rows", [1, 3, 4096])
def test_provenance_written_in_groups_lands_on_the_rows_of_its_samples(store, monkeypatch, group_rows):
    """Provenance rows are kept back and written a group at a time (store_writer.PROVENANCE_ROWS):
    whatever the group size, each sample's labels, id, source, window and label map are its own,
    also when only some batches carry label maps and some samples are duplicates."""
    from spectral_training.cubes import store_writer

    monkeypatch.setattr(store_writer, "PROVENANCE_ROWS", group_rows)
    values = _values(9, seed=5)
    batches = []
    for b, start in enumerate(range(0, 9, 3)):
        batch = _batch(values[start : start + 3], source=f"file{b}.h5", prefix=f"f{b}_")
        batch.labels = np.arange(start, start + 3, dtype=np.int64)
        batch.windows = np.tile(np.array([[b, 0, 4, 4]], np.int32), (3, 1))
        if b != 1:  # the middle file has no label map
            batch.label_maps = np.full((3, 4, 4), b + 1, dtype=np.int32)
        batches.append(batch)
    batches.append(_batch(values[:1], source="dup.h5", prefix="dup"))  # a duplicate: no row
    store.append(batches)
    assert list(store.column("sample_ids")) == [f"f{b}_{i}" for b in range(3) for i in range(3)]
    assert list(store.column("labels")) == list(range(9))
    assert list(store.column("source_file")) == [f"file{b}.h5" for b in range(3) for _ in range(3)]
    with h5py.File(store.path) as f:
        assert list(f["window"][:, 0]) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
        assert [int(m[0, 0]) for m in f["label_maps"][()]] == [1, 1, 1, 0, 0, 0, 3, 3, 3]
    assert np.array_equal(store.read(np.arange(9)), values)


def test_chunks_of_64_kib_and_more_start_on_a_page_boundary(tmp_path):
    s = CubeStore(tmp_path / "big.h5")
    s.create(num_bands=16, tile_size=32, band_names=None, wavelengths_nm=None)  # 64 KiB per sample
    values = np.random.default_rng(0).normal(size=(3, 16, 32, 32)).astype("f4")
    s.append([TileBatch(cubes=values, sample_ids=["a", "b", "c"], source_file="x",
                        windows=np.zeros((3, 4), np.int32), labels=np.full(3, -1))])
    with h5py.File(s.path) as f:
        offsets = []
        f["cubes"].id.chunk_iter(lambda info: offsets.append(info.byte_offset))
    assert len(offsets) == 3 and all(offset % 4096 == 0 for offset in offsets)
    assert np.array_equal(s.read([2, 0, 1]), values[[2, 0, 1]])


def test_a_batch_that_fails_while_hashing_leaves_no_tile_without_provenance(store, monkeypatch):
    from spectral_training.cubes import store_schema as store_module  # where the hashing lives

    values = _values(6)
    store.append([_batch(values[:2])])
    real_hash = store_module.content_hash
    calls = {"n": 0}

    def flaky(tile, *args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("hash failed")
        return real_hash(tile, *args)

    monkeypatch.setattr(store_module, "content_hash", flaky)
    with pytest.raises(RuntimeError, match="hash failed"):
        store.append([_batch(values[2:], prefix="b")])
    with h5py.File(store.path) as f:
        assert {f[name].shape[0] for name in ("cubes", "labels", "sample_ids", "content_hash")} == {2}
    assert np.array_equal(store.read([0, 1]), values[:2])


def _contents(path) -> dict:
    with h5py.File(path, "r") as f:
        return {"datasets": {name: f[name][()].tolist() for name in f}, "attrs": dict(f.attrs)}


def test_roll_back_removes_every_sample_dataset_and_attribute_a_run_added(store):
    store.append([_batch(np.random.rand(2, 3, 4, 4).astype("f4"))])
    before, mark = _contents(store.path), store.mark()
    later = _batch(np.random.rand(3, 3, 4, 4).astype("f4"), source="b.h5", prefix="b")
    later.label_maps = np.ones((3, 4, 4), np.int32)  # the store's first label maps: a new dataset
    store.set_class_names(["field"])
    store.append([later])
    assert len(store) == 5
    store.roll_back(mark)
    assert _contents(store.path) == before and len(store) == 2
    assert np.array_equal(store.read([0, 1]), np.asarray(before["datasets"]["cubes"], np.float32))


def test_roll_back_to_before_the_store_existed_removes_it(tmp_path):
    s = CubeStore(tmp_path / "new.h5")
    mark = s.mark()
    s.create(num_bands=3, tile_size=4, band_names=None, wavelengths_nm=None)
    s.append([_batch(np.random.rand(1, 3, 4, 4).astype("f4"))])
    s.roll_back(mark)
    assert list(tmp_path.iterdir()) == []
