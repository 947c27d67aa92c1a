"""The store's schema: what a store file holds, what a batch to append holds, and content hashes.

A store keeps one **sample layout**, recorded in the attribute ``sample_layout`` (a store
written before the attribute existed reads as ``cube``):

``cube`` (N samples of C bands, S x S pixels)::

    cubes          float32 (N, C, S, S)     resizable, one sample per chunk

``series`` (N samples of up to L dates, L = the store's ``max_seq_len``)::

    series         float32 (N, L, C, S, S)  one sample per chunk, padded dates hold zeros
    day_of_year    int16   (N, L)           1..366, 0 = padding
    date_mask      bool    (N, L)           True = a real date
    valid          uint8   (N, L, S, S)     1 = the pixel was observed (not cloud, shadow or fill),
                                            one sample per chunk (read like the samples)

and, whatever the layout::

    labels         int64   (N,)          -1 = no label
    label_maps     int32   (N, S, S)     per-pixel classes, 0 = unlabelled (only when a source had them)
    sample_ids     str     (N,)
    content_hash   bytes   (N,)          128-bit hash of the stored sample, hex (algorithm: hash_algorithm)
    source_file    str     (N,)          path relative to the raw dataset folder
    window         int32   (N, 4)        row, col, height, width in the source image
    attrs: format_version, sample_layout, num_bands, tile_size, max_seq_len (series), band_names,
           wavelengths_nm, class_names, compression, hash_algorithm, ingestion_log (JSON list)

Per-sample provenance lives in datasets, not attributes: HDF5 attributes are capped at 64 KiB.
One chunk per sample makes an append cheap and a random read touch exactly one chunk.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import h5py
import numpy as np
import xxhash

FORMAT_VERSION = 1
_STR = h5py.string_dtype(encoding="utf-8")
_HASH = "S32"
# New stores hash with XXH3-128: hashes de-duplicate samples and identify the training data, they
# are not a defence against forged files, and XXH3 ran at ~20 GB/s here against SHA-256's 1.7 GB/s
# (blake2b 0.9, BLAKE3 3.6). A store records its algorithm and keeps it for every later append.
HASH_ALGORITHM = "xxh3-128"
LEGACY_HASH_ALGORITHM = "sha256-128"  # the first 128 bits of SHA-256: stores written before XXH3
# Chunks of 64 KiB and more start on a boundary of the largest power of two (4 KiB to 256 KiB)
# that wastes at most 1/16 of a chunk in padding. The kernel's page cache holds a file written
# at such boundaries in large folios: warm random batch reads of 256 KiB samples measured 0.76x
# np.fromfile with 4 KiB alignment and 1.06x with 64 KiB or more (benchmarks/bench_data_layer.py).
_ALIGNMENT_THRESHOLD = 64 * 1024
_MIN_ALIGNMENT, _MAX_ALIGNMENT = 4096, 256 * 1024


def write_alignment(chunk_bytes: int) -> dict:
    """h5py file-access keywords that align every large object (sample chunks) for ``chunk_bytes``."""
    interval = _MAX_ALIGNMENT
    while interval > _MIN_ALIGNMENT and (-chunk_bytes % interval) * 16 > chunk_bytes:
        interval //= 2
    return {"alignment_threshold": _ALIGNMENT_THRESHOLD, "alignment_interval": interval}

SAMPLE_LAYOUTS = ("cube", "series")
# The dataset that holds the samples themselves, per layout.
SAMPLE_DATASET = {"cube": "cubes", "series": "series"}
VALID_DATASET = "valid"
SERIES_DATASETS = ("day_of_year", "date_mask", VALID_DATASET)


class StoreSchemaError(ValueError):
    """Data that does not fit an existing store (layout, band count, tile size, series length)."""


def layout_of(f: h5py.File) -> str:
    """The sample layout of an open store; stores written before the attribute are cube stores."""
    layout = f.attrs.get("sample_layout", "cube")
    return layout.decode() if isinstance(layout, bytes) else str(layout)


def sample_dataset(f: h5py.File) -> h5py.Dataset:
    """The dataset of an open store that holds the samples (``cubes`` or ``series``)."""
    return f[SAMPLE_DATASET[layout_of(f)]]


def read_info(f: h5py.File) -> dict:
    """Store-level attributes of an open store as plain Python values, plus the sample count."""
    attrs = f.attrs
    layout = layout_of(f)
    data = f[SAMPLE_DATASET[layout]]
    return {
        "num_samples": int(data.shape[0]),
        "sample_layout": layout,
        "num_bands": int(attrs["num_bands"]),
        "tile_size": int(attrs["tile_size"]),
        "max_seq_len": int(data.shape[1]) if layout == "series" else None,
        "band_names": json.loads(attrs["band_names"]),
        "wavelengths_nm": json.loads(attrs["wavelengths_nm"]),
        "class_names": json.loads(attrs["class_names"]),
        "compression": attrs["compression"] or None,
        "has_label_maps": "label_maps" in f,
        "format_version": int(attrs["format_version"]),
        "hash_algorithm": recorded_hash_algorithm(f),
    }


def layout_mismatch(source: str, store_path: object, found: str, given: str) -> StoreSchemaError:
    """The error for samples of one layout offered to a store of the other."""
    return StoreSchemaError(
        f"{source}: {given} samples cannot be appended to the store {store_path}, whose sample layout is "
        f"'{found}' (found in the store; given: '{given}'). A store holds one layout. Fix: ingest these files "
        f"as a dataset of their own (--params dataset=<new name>), or move {store_path} aside to rebuild it "
        f"as a {given} store."
    )


def compression_options(compression: str | None) -> dict:
    if compression in (None, "", "none"):
        return {}
    if compression == "lzf":
        return {"compression": "lzf"}
    if compression.startswith("gzip"):
        level = int(compression.split("-")[1]) if "-" in compression else 4
        return {"compression": "gzip", "compression_opts": level}
    raise ValueError(f"compression '{compression}' is not supported: use none, lzf, or gzip-<level 1..9>")


def plain_layout(data: h5py.Dataset, dtype: np.dtype = np.dtype("=f4")) -> bool:
    """True when each sample is one unfiltered chunk of native-order ``dtype``: the chunk's bytes
    on disk are the sample's bytes in memory."""
    return (
        data.chunks == (1, *data.shape[1:])
        and data.dtype == dtype
        and data.id.get_create_plist().get_nfilters() == 0
    )


# ---- content hashes ----------------------------------------------------------------------------
def _sha256_128(parts: Sequence[memoryview]) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)
    return digest.hexdigest()[:32]


def _xxh3_128(parts: Sequence[memoryview]) -> str:
    digest = xxhash.xxh3_128()
    for part in parts:
        digest.update(part)
    return digest.hexdigest()


# Every algorithm a store may record, by its recorded name: 32 hex digits each.
HASH_FUNCTIONS = {HASH_ALGORITHM: _xxh3_128, LEGACY_HASH_ALGORITHM: _sha256_128}


def recorded_hash_algorithm(f: h5py.File) -> str:
    """The name of the hash algorithm an open store records; a store without the attribute
    predates XXH3 (reading needs no hash, so an unknown name is returned, not refused)."""
    name = f.attrs.get("hash_algorithm", LEGACY_HASH_ALGORITHM)
    return name.decode() if isinstance(name, bytes) else str(name)


def hash_algorithm_of(f: h5py.File) -> str:
    """The hash algorithm to append to an open store with: the one it records, which must be known."""
    name = recorded_hash_algorithm(f)
    if name not in HASH_FUNCTIONS:
        raise StoreSchemaError(
            f"{f.filename}: the store records the content-hash algorithm '{name}', which this version does not "
            f"know (known: {sorted(HASH_FUNCTIONS)}). Fix: use the version of the project that wrote the store, "
            f"or ingest the raw files into a new store."
        )
    return name


def _bytes_of(array: np.ndarray, dtype=None) -> memoryview:
    """The C-contiguous bytes of an array as a flat byte view (what every hash function takes)."""
    return memoryview(np.ascontiguousarray(array, dtype=dtype).reshape(-1).view(np.uint8))


def content_hash(tile: np.ndarray, algorithm: str = HASH_ALGORITHM) -> str:
    """The 128-bit hash of a tile's bytes (float32, C-contiguous), as 32 hex digits."""
    return HASH_FUNCTIONS[algorithm]([_bytes_of(tile)])


def series_content_hash(series: np.ndarray, day_of_year: np.ndarray, valid: np.ndarray,
                        algorithm: str = HASH_ALGORITHM) -> str:
    """:func:`content_hash` of a series sample: its values, then its dates (int32 little-endian)
    and its validity mask (one byte per pixel), so that the same pixels on other dates, or
    with another cloud mask, are another sample."""
    parts = [_bytes_of(series), _bytes_of(day_of_year, "<i4"), _bytes_of(valid, np.uint8)]
    return HASH_FUNCTIONS[algorithm](parts)


_HASH_WORKERS = max(1, min(os.cpu_count() or 1, 4))
_HASH_GROUP_BYTES = 1 << 20  # tiles hashed per pool task: ~1 MB, so the first hashes come back soon
_HASH_POOL: ThreadPoolExecutor | None = None
_HASH_POOL_PID: int | None = None
_HASH_POOL_LOCK = threading.Lock()


def _hash_pool() -> ThreadPoolExecutor:
    """Threads that hash tiles (hashlib and xxhash release the GIL on large buffers); one pool per process."""
    global _HASH_POOL, _HASH_POOL_PID
    pid = os.getpid()
    if _HASH_POOL is None or _HASH_POOL_PID != pid:  # a forked child has none of the parent's threads
        with _HASH_POOL_LOCK:
            if _HASH_POOL is None or _HASH_POOL_PID != pid:
                _HASH_POOL = ThreadPoolExecutor(max_workers=_HASH_WORKERS, thread_name_prefix="tile-hash")
                _HASH_POOL_PID = pid
    return _HASH_POOL


def _hash_stream(batch: "TileBatch", algorithm: str) -> Iterator[str]:
    """The hash of each sample of ``batch``, in order, computed ahead on the pool in ~1 MB groups
    while the caller consumes the first ones."""
    k = len(batch.cubes)
    if k == 0:
        return
    per_group = max(1, _HASH_GROUP_BYTES // max(batch.cubes[0].nbytes, 1))

    def work(start: int) -> list[str]:
        return [batch.sample_hash(i, algorithm) for i in range(start, min(start + per_group, k))]

    pool = _hash_pool()
    futures: list[Future] = [pool.submit(work, start) for start in range(0, k, per_group)]
    for fut in futures:
        yield from fut.result()


# ---- what an append takes and returns ----------------------------------------------------------
@dataclass
class TileBatch:
    """Samples cut from one source file, ready to append: cubes, or (with the three series
    fields) series padded to the store's ``max_seq_len`` L.

    ``hashes`` (one per sample) may be given, and are then taken as the store's own; when it
    is not, it is computed when first needed, on a small thread pool: ``CubeStore.append``
    writes the first samples of the batch while the pool hashes the next ones, with the
    algorithm the store records.
    """

    cubes: np.ndarray  # float32 (k, C, S, S); a series batch: (k, L, C, S, S)
    sample_ids: list[str]
    source_file: str
    windows: np.ndarray  # int32 (k, 4): row, col, height, width
    labels: np.ndarray  # int64 (k,)
    label_maps: np.ndarray | None = None  # int32 (k, S, S)
    hashes: list[str] = field(default_factory=list)  # a property below: computed when first read
    day_of_year: np.ndarray | None = None  # series: int (k, L), 0 = padding
    date_mask: np.ndarray | None = None  # series: bool (k, L), True = a real date
    valid: np.ndarray | None = None  # series: bool (k, L, S, S), True = observed

    @property
    def layout(self) -> str:
        return "series" if self.day_of_year is not None else "cube"

    def sample_hash(self, i: int, algorithm: str = HASH_ALGORITHM) -> str:
        if self.day_of_year is None:
            return content_hash(self.cubes[i], algorithm)
        return series_content_hash(self.cubes[i], self.day_of_year[i], self.valid[i], algorithm)

    def compute_hashes(self, algorithm: str = HASH_ALGORITHM) -> None:
        """Hash every sample now, on the calling thread, with ``algorithm``: an append to a store
        that records ``algorithm`` takes these as they are (one recording another computes its own)."""
        self._hashes = [self.sample_hash(i, algorithm) for i in range(len(self.cubes))]
        self._hashes_algorithm = algorithm

    def _get_hashes(self) -> list[str]:
        return list(self._hash_stream())

    def _set_hashes(self, value: Sequence[str] | None) -> None:
        self._hashes = list(value) if value else None  # empty: computed from the tiles when read
        self._hashes_algorithm = None  # given hashes are taken as the store's, whatever it records

    def _hash_stream(self, algorithm: str = HASH_ALGORITHM) -> Iterator[str]:
        """The hashes in order, as they are computed (or the known ones); kept once all are out.

        Hashes computed before with another algorithm (read before appending to a store that
        records an older one) are computed again, so that a store never mixes two algorithms.
        """
        if self._hashes is not None and self._hashes_algorithm in (None, algorithm):
            yield from self._hashes
            return
        hashes = []
        for h in _hash_stream(self, algorithm):
            hashes.append(h)
            yield h
        self._hashes, self._hashes_algorithm = hashes, algorithm


TileBatch.hashes = property(TileBatch._get_hashes, TileBatch._set_hashes,  # type: ignore[assignment]
                            doc="Content hash (HASH_ALGORITHM, 32 hex digits) of each sample, in order.")


@dataclass
class AppendSummary:
    """What one append did, also recorded in the store's ``ingestion_log``."""

    appended: int = 0
    duplicates: int = 0
    duplicate_ids: list[str] = field(default_factory=list)
    per_file: dict[str, dict[str, int]] = field(default_factory=dict)
