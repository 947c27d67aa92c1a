"""Reading samples from a store: plain copies at cached chunk offsets, h5py otherwise.

In an uncompressed store the bytes of a sample's chunk *are* the sample (float32 values, or the
series' one-byte validity mask), so reads skip HDF5 once the byte offset of every chunk is
known: a :class:`SampleReader` keeps, per process, a plain read-only file descriptor, the file
mapped read-only in memory and that offset table, and copies samples from the mapping straight
into the output buffer (adjacent samples in one copy; ``os.preadv`` where mapping fails).
Compressed stores, and anything unusual (a filter, an unallocated chunk, a non-native byte
order), go through h5py.
"""

from __future__ import annotations

import mmap
import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np

from .pread import pread_exact
from .store_schema import SAMPLE_DATASET, layout_of, plain_layout

_F4 = np.dtype("=f4")


def _chunk_offsets(dsid: h5py.h5d.DatasetID, num_samples: int, chunk_bytes: int) -> np.ndarray:
    """File byte offset of each sample's chunk, int64 (N,); -1 where the chunk is not allocated
    (or is anything but ``chunk_bytes`` raw bytes). One pass over the chunk index."""
    offsets = np.full(num_samples, -1, dtype=np.int64)

    def visit(info) -> None:
        i = info.chunk_offset[0]
        if i < num_samples and info.byte_offset is not None and info.filter_mask == 0 and info.size == chunk_bytes:
            offsets[i] = info.byte_offset

    if hasattr(dsid, "chunk_iter"):  # HDF5 >= 1.12.3: one callback per chunk, ~3 us each
        dsid.chunk_iter(visit)
    else:
        for j in range(dsid.get_num_chunks()):
            visit(dsid.get_chunk_info(j))
    return offsets


def _sample_runs(offsets: np.ndarray, chunk_bytes: int) -> tuple[list[tuple[int, int, int]], list[int]]:
    """Runs ``(first k, end k, file offset)`` of positions adjacent both in the output and in the
    file, one read each, and the positions whose chunk is not allocated (offset -1)."""
    runs: list[tuple[int, int, int]] = []
    missing: list[int] = []
    run_start = run_offset = run_end = -1  # the current run: first k, its file offset, where it ends
    for k, offset in enumerate(offsets.tolist()):
        if offset >= 0 and offset == run_end:  # the next chunk in the file: the run goes on
            run_end += chunk_bytes
            continue
        if run_start >= 0:
            runs.append((run_start, k, run_offset))
        if offset < 0:
            missing.append(k)
            run_start = run_offset = run_end = -1
        else:
            run_start, run_offset, run_end = k, offset, offset + chunk_bytes
    if run_start >= 0:
        runs.append((run_start, len(offsets), run_offset))
    return runs, missing


def _read_plain(source: int | np.ndarray, offsets: np.ndarray, out: np.ndarray, chunk_bytes: int) -> np.ndarray:
    """Copy chunk ``offsets[k]`` into ``out[k]`` (C-contiguous) for every k with an offset >= 0,
    from ``source``: the file mapped in memory (a uint8 array), else a file descriptor to
    ``preadv`` from. Returns the positions k whose chunk is not allocated, for the caller to fill."""
    runs, missing = _sample_runs(offsets, chunk_bytes)
    if isinstance(source, np.ndarray):
        flat = out.reshape(-1).view(np.uint8)
        for k0, k1, offset in runs:
            flat[k0 * chunk_bytes : k1 * chunk_bytes] = source[offset : offset + (k1 - k0) * chunk_bytes]
    else:
        view = memoryview(out.reshape(-1).view(np.uint8))  # slicing a memoryview is cheap
        for k0, k1, offset in runs:
            pread_exact(source, view[k0 * chunk_bytes : k1 * chunk_bytes], offset)
    return np.asarray(missing, dtype=np.int64)


def _map_file(fd: int, offsets: np.ndarray, chunk_bytes: int) -> mmap.mmap | None:
    """The file behind ``fd`` mapped read-only, up to the end of its last known chunk; None
    where it cannot be mapped (then reads use ``preadv``).

    Copying from the mapping costs no system call per sample: a random batch of 32 samples of
    256 KiB read ~15-20 % faster than with one ``preadv`` each (benchmarks/bench_data_layer.py).
    The store is append-only and a dataset run lock keeps writers away from a run's readers, so
    the mapped range never shrinks under a reader. The pages a process has read count in its
    resident memory (shared with the page cache, and dropped first under memory pressure)."""
    if not len(offsets) or offsets.max() < 0:
        return None
    length = int(offsets.max()) + chunk_bytes
    try:
        if os.fstat(fd).st_size < length:
            return None
        return mmap.mmap(fd, length, prot=mmap.PROT_READ)
    except (OSError, ValueError):
        return None


def _output(out: np.ndarray | None, shape: tuple[int, ...], dtype: np.dtype = _F4) -> np.ndarray:
    if out is None:
        return np.empty(shape, dtype=dtype)
    if out.shape != shape or out.dtype != dtype:
        raise ValueError(f"out has shape {out.shape} {out.dtype}, need {shape} {dtype}")
    return out


def _checked(order: np.ndarray, num_samples: int, where: object) -> np.ndarray:
    """Indices with negative ones counted from the end; an IndexError names the bad one."""
    if len(order) == 1:
        i = int(order[0])
        if 0 <= i < num_samples:
            return order
    elif len(order) == 0 or (order.min() >= 0 and order.max() < num_samples):
        return order
    order = np.where(order < 0, order + num_samples, order)
    bad = (order < 0) | (order >= num_samples)
    if bad.any():
        name = where.name if isinstance(where, h5py.Dataset) else where
        raise IndexError(f"{name}: sample index {int(order[np.argmax(bad)])} is out of range for {num_samples} samples")
    return order


class PassMapping:
    """A store's sample chunks mapped read-only for one pass over them (the statistics): kernels
    read the samples where they lie in the page cache, with no copy, and ``release`` drops a
    block's pages from the process once it is summed, so resident memory stays at a few blocks
    whatever the store's size (the pages stay in the page cache)."""

    def __init__(self, mapped: mmap.mmap, offsets: np.ndarray, chunk_bytes: int, sample_shape: tuple[int, ...]):
        self._map = mapped
        self.bytes = np.frombuffer(self._map, dtype=np.uint8)  # what kernels read, at ``offsets``
        self.offsets, self.chunk_bytes, self.sample_shape = offsets, chunk_bytes, sample_shape

    def release(self, offsets: np.ndarray) -> None:
        """Unmap the pages of the chunks at ``offsets`` from this process (MADV_DONTNEED: a file
        mapping's pages are simply read again from the page cache if touched later)."""
        if len(offsets) and hasattr(mmap, "MADV_DONTNEED"):
            start = int(offsets.min()) // mmap.PAGESIZE * mmap.PAGESIZE
            self._map.madvise(mmap.MADV_DONTNEED, start, int(offsets.max()) + self.chunk_bytes - start)

    def close(self) -> None:
        self.bytes = None  # the array holds an export of the map, which must go before it closes
        self._map.close()


class SampleReader:
    """One process's read handle on one per-sample dataset of a store: a plain read-only file
    descriptor, and the byte offset of every sample's chunk when the layout allows plain reads
    (else None: h5py reads).

    ``name`` is the dataset (None: the samples, ``cubes`` or ``series`` by the store's layout),
    ``dtype`` what its values are read as (the samples are float32; the series' ``valid`` mask
    is stored as uint8 and read as bool, the same bytes).
    """

    def __init__(self, path: Path, name: str | None = None, dtype: np.dtype = _F4):
        self.path = path
        self.name = name
        self.dtype = np.dtype(dtype)
        self.fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        self._close_fd = weakref.finalize(self, os.close, self.fd)
        try:
            stat = os.fstat(self.fd)
            self.identity = (stat.st_dev, stat.st_ino)
            self.refresh()
        except BaseException:
            self.close()
            raise

    def _dataset(self, f: h5py.File) -> h5py.Dataset:
        return f[self.name or SAMPLE_DATASET[layout_of(f)]]

    def refresh(self) -> None:
        """Read the sample count and, for a plain layout, the chunk offsets again."""
        with h5py.File(self.path, "r") as f:
            data = self._dataset(f)
            num_samples, sample_shape = int(data.shape[0]), tuple(int(v) for v in data.shape[1:])
            chunk_bytes = int(np.prod(sample_shape)) * self.dtype.itemsize
            # The stored dtype must be the read dtype byte for byte (bool is read from uint8).
            stored = np.dtype(np.uint8) if self.dtype == np.dtype(bool) else self.dtype
            offsets = _chunk_offsets(data.id, num_samples, chunk_bytes) if plain_layout(data, stored) else None
            if offsets is not None and not self._same_file(f):
                offsets = None  # the path now names another file than our descriptor: read through h5py
        mapped = None if offsets is None else _map_file(self.fd, offsets, chunk_bytes)
        source = None if mapped is None else np.frombuffer(mapped, dtype=np.uint8)
        # One assignment, so a thread reading meanwhile sees the old table or the new one, whole.
        self.table = (num_samples, sample_shape, chunk_bytes, offsets, self.fd if source is None else source)

    def _same_file(self, f: h5py.File) -> bool:
        try:
            stat = os.fstat(f.id.get_vfd_handle())
        except Exception:  # not the sec2 driver: we cannot tell
            return False
        return (stat.st_dev, stat.st_ino) == self.identity

    @property
    def num_samples(self) -> int:
        return self.table[0]

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return self.table[1]

    def current(self) -> bool:
        """False when the path now names another file (the store was re-created) or none."""
        try:
            stat = os.stat(self.path)
        except OSError:
            return False
        return (stat.st_dev, stat.st_ino) == self.identity

    def _h5py_read(self, order: np.ndarray, out: np.ndarray) -> np.ndarray:
        with h5py.File(self.path, "r") as f:
            data = self._dataset(f)
            if self.dtype == _F4:
                return read_samples(data, order, out=out)
            for k, i in enumerate(order):
                out[k] = data[int(i)]
        return out

    def read(self, order: np.ndarray, out: np.ndarray | None, streaming: bool = False) -> np.ndarray:
        """Samples ``order`` into ``out``; ``streaming`` reads with ``preadv`` even where the file
        is mapped, for one pass over many samples (whose pages would stay resident if mapped)."""
        num_samples, sample_shape, chunk_bytes, offsets, source = self.table
        if streaming:
            source = self.fd
        order = _checked(order, num_samples, self.path)
        out = _output(out, (len(order), *sample_shape), self.dtype)
        if offsets is None:
            return self._h5py_read(order, out)
        target = out if out.flags.c_contiguous else np.empty(out.shape, dtype=self.dtype)
        missing = _read_plain(source, offsets[order], target, chunk_bytes)
        if len(missing):  # chunks never written hold the fill value: let h5py supply it
            with h5py.File(self.path, "r") as f:
                data = self._dataset(f)
                for k in missing:
                    target[k] = data[int(order[k])]
        if target is not out:
            out[...] = target
        return out

    def map_for_pass(self, order: np.ndarray) -> PassMapping | None:
        """The samples ``order`` mapped for one pass (see :class:`PassMapping`), or None where
        they cannot all be: not a plain layout, a chunk not allocated, a mapping refused."""
        num_samples, sample_shape, chunk_bytes, offsets, _ = self.table
        if offsets is None:
            return None
        wanted = offsets[_checked(order, num_samples, self.path)]
        mapped = _map_file(self.fd, wanted, chunk_bytes) if len(wanted) and wanted.min() >= 0 else None
        return None if mapped is None else PassMapping(mapped, wanted, chunk_bytes, sample_shape)

    def read_one(self, index: int, out: np.ndarray | None) -> np.ndarray:
        num_samples, sample_shape, chunk_bytes, offsets, source = self.table
        i = index + num_samples if index < 0 else index
        out = _output(out, sample_shape, self.dtype)
        offset = int(offsets[i]) if offsets is not None and 0 <= i < num_samples else -1
        if offset >= 0 and out.flags.c_contiguous:
            flat = out.reshape(-1).view(np.uint8)
            if isinstance(source, np.ndarray):
                flat[...] = source[offset : offset + chunk_bytes]
            else:
                pread_exact(source, memoryview(flat), offset)
            return out
        self.read(np.array([index], dtype=np.int64), out[None])  # the general path checks the index
        return out

    def close(self) -> None:
        self._close_fd()


# Plain reads of datasets opened by the caller (``read_samples``), cached at two levels:
# - per open file and dataset, keyed by (HDF5 file serial number, dataset address): the serial
#   number is new at every open, so a key never outlives its file, and the file descriptor that
#   HDF5 holds for that open is valid as long as the dataset is;
# - per file on disk (device, inode, size, mtime, ctime, dataset address, sample count), so that
#   opening an unchanged file again does not walk its chunk index again.
# These reads stream through a file (the statistics pass), so they use ``preadv``, not a mapping:
# the mapped pages a pass touches would count in the process's resident memory, up to the store's size.
_CACHE_SIZE = 8
_OPEN_PLANS: OrderedDict[tuple[int, int], tuple[int, np.ndarray] | None] = OrderedDict()
_FILE_OFFSETS: OrderedDict[tuple[int, ...], np.ndarray] = OrderedDict()
_CACHE_LOCK = threading.Lock()


def _remember(cache: OrderedDict, key, value) -> None:
    with _CACHE_LOCK:
        cache[key] = value
        cache.move_to_end(key)
        while len(cache) > _CACHE_SIZE:
            cache.popitem(last=False)


def _plain_read_plan(cubes: h5py.Dataset) -> tuple[int, np.ndarray] | None:
    """(file descriptor, chunk offsets) for plain reads of an open dataset, or None when the
    dataset or its file is not plain: a filter, another dtype, a writable or non-sec2 file."""
    dsid = cubes.id
    info = h5py.h5o.get_info(dsid)
    open_key = (info.fileno, info.addr)
    num_samples = cubes.shape[0]
    plan = _OPEN_PLANS.get(open_key, False)
    if plan is not False and (plan is None or len(plan[1]) == num_samples):
        return plan
    fid = h5py.h5i.get_file_id(dsid)
    plan = None
    if (
        fid.get_intent() == h5py.h5f.ACC_RDONLY  # a writable file may hold chunks not yet on disk
        and fid.get_access_plist().get_driver() == h5py.h5fd.SEC2
        and plain_layout(cubes)
    ):
        fd = fid.get_vfd_handle()
        stat = os.fstat(fd)
        file_key = (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, open_key[1], num_samples)
        offsets = _FILE_OFFSETS.get(file_key)
        if offsets is None:
            offsets = _chunk_offsets(dsid, num_samples, int(np.prod(cubes.shape[1:])) * 4)
            _remember(_FILE_OFFSETS, file_key, offsets)
        plan = (fd, offsets)
    _remember(_OPEN_PLANS, open_key, plan)
    return plan


def read_samples(cubes: h5py.Dataset, indices: Sequence[int] | np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Read samples of an open float32 sample dataset (``cubes`` or ``series``) into one array.

    Uncompressed stores opened read-only are read with ``os.preadv`` from the byte offsets of
    their chunks (collected once per open file and dataset, then cached): one sample is one
    chunk, so this is a plain file read straight into the output buffer. Other uncompressed
    files (opened writable, another driver) are read chunk by chunk with ``read_direct_chunk``;
    compressed stores, other dtypes and unallocated chunks go through h5py's normal path.
    """
    order = np.asarray(indices, dtype=np.int64).reshape(-1)
    store_shape = cubes.shape
    shape = (len(order), *store_shape[1:])
    out = _output(out, shape)
    if len(order) == 0:
        return out
    order = _checked(order, int(store_shape[0]), cubes)
    plan = _plain_read_plan(cubes)
    if plan is not None:
        fd, offsets = plan
        target = out if out.flags.c_contiguous else np.empty(shape, dtype=np.float32)
        chunk_bytes = target[0].nbytes
        for k in _read_plain(fd, offsets[order], target, chunk_bytes):
            cubes.read_direct(target, source_sel=np.s_[int(order[k])], dest_sel=np.s_[int(k)])
        if target is not out:
            out[...] = target
    elif cubes.compression is None and cubes.chunks == (1, *cubes.shape[1:]) and cubes.dtype == _F4 \
            and out.flags.c_contiguous:
        dsid = cubes.id
        flat = out.view(np.uint8).reshape(len(order), -1)  # h5py wants a 1-D byte buffer per chunk
        zeros = (0,) * (len(store_shape) - 1)
        for k, i in enumerate(order):
            # read_direct_chunk fills the buffer in place with the chunk's raw bytes.
            dsid.read_direct_chunk((int(i), *zeros), out=flat[k])
    else:
        for k, i in enumerate(order):
            cubes.read_direct(out, source_sel=np.s_[int(i)], dest_sel=np.s_[k])
    return out
