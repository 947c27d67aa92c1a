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
    content_hash   bytes   (N,)          SHA-256 (first 128 bits) of the stored sample, hex
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

FORMAT_VERSION = 1
_STR = h5py.string_dtype(encoding="utf-8")
_HASH = "S32"
HASH_ALGORITHM = "sha256-128"  # the first 128 bits of SHA-256, hex; recorded in every new store
# Chunks of 64 KiB and more start on a 4 KiB page boundary: a sample's bytes then fill whole
# pages of the page cache, and warm random reads of 256 KiB samples measured 3-8 % faster.
_ALIGNMENT = {"alignment_threshold": 64 * 1024, "alignment_interval": 4096}

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
def content_hash(tile: np.ndarray) -> str:
    """First 128 bits of the SHA-256 of a tile's bytes (float32, C-contiguous), as hex.

    SHA-256 runs on the CPU's SHA extensions here at ~1.2 GB/s, twice blake2b's speed, and
    hashing sits on ingestion's hot path beside the HDF5 write.
    """
    return hashlib.sha256(np.ascontiguousarray(tile).data).hexdigest()[:32]


def series_content_hash(series: np.ndarray, day_of_year: np.ndarray, valid: np.ndarray) -> str:
    """:func:`content_hash` of a series sample: its values, then its dates (int32 little-endian)
    and its validity mask (one byte per pixel), so that the same pixels on other dates, or
    with another cloud mask, are another sample."""
    digest = hashlib.sha256(np.ascontiguousarray(series).data)
    digest.update(np.ascontiguousarray(day_of_year, dtype="<i4").data)
    digest.update(np.ascontiguousarray(valid, dtype=np.uint8).data)
    return digest.hexdigest()[:32]


_HASH_WORKERS = max(1, min(os.cpu_count() or 1, 4))
_HASH_GROUP_BYTES = 1 << 20  # tiles hashed per pool task: ~1 MB, so the first hashes come back soon
_HASH_POOL: ThreadPoolExecutor | None = None
_HASH_POOL_PID: int | None = None
_HASH_POOL_LOCK = threading.Lock()


def _hash_pool() -> ThreadPoolExecutor:
    """Threads that hash tiles (hashlib releases the GIL on large buffers); one pool per process."""
    global _HASH_POOL, _HASH_POOL_PID
    pid = os.getpid()
    if _HASH_POOL is None or _HASH_POOL_PID != pid:  # a forked child has none of the parent's threads
        with _HASH_POOL_LOCK:
            if _HASH_POOL is None or _HASH_POOL_PID != pid:
                _HASH_POOL = ThreadPoolExecutor(max_workers=_HASH_WORKERS, thread_name_prefix="tile-hash")
                _HASH_POOL_PID = pid
    return _HASH_POOL


def _hash_stream(batch: "TileBatch") -> Iterator[str]:
    """The hash of each sample of ``batch``, in order, computed ahead on the pool in ~1 MB groups
    while the caller consumes the first ones."""
    k = len(batch.cubes)
    if k == 0:
        return
    per_group = max(1, _HASH_GROUP_BYTES // max(batch.cubes[0].nbytes, 1))

    def work(start: int) -> list[str]:
        return [batch.sample_hash(i) for i in range(start, min(start + per_group, k))]

    pool = _hash_pool()
    futures: list[Future] = [pool.submit(work, start) for start in range(0, k, per_group)]
    for fut in futures:
        yield from fut.result()


# ---- what an append takes and returns ----------------------------------------------------------
@dataclass
class TileBatch:
    """Samples cut from one source file, ready to append: cubes, or (with the three series
    fields) series padded to the store's ``max_seq_len`` L.

    ``hashes`` (one per sample) may be given; when it is not, it is computed when first needed,
    on a small thread pool: ``CubeStore.append`` writes the first samples of the batch while
    the pool hashes the next ones.
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

    def sample_hash(self, i: int) -> str:
        if self.day_of_year is None:
            return content_hash(self.cubes[i])
        return series_content_hash(self.cubes[i], self.day_of_year[i], self.valid[i])

    def _get_hashes(self) -> list[str]:
        if self._hashes is None:
            self._hashes = list(_hash_stream(self))
        return self._hashes

    def _set_hashes(self, value: Sequence[str] | None) -> None:
        self._hashes = list(value) if value else None  # empty: computed from the tiles when read

    def _hash_stream(self) -> Iterator[str]:
        """The hashes in order, as they are computed (or the known ones); kept once all are out."""
        if self._hashes is not None:
            yield from self._hashes
            return
        hashes = []
        for h in _hash_stream(self):
            hashes.append(h)
            yield h
        self._hashes = hashes


TileBatch.hashes = property(TileBatch._get_hashes, TileBatch._set_hashes,  # type: ignore[assignment]
                            doc="SHA-256 content hash (first 128 bits, hex) of each sample, in order.")


@dataclass
class AppendSummary:
    """What one append did, also recorded in the store's ``ingestion_log``."""

    appended: int = 0
    duplicates: int = 0
    duplicate_ids: list[str] = field(default_factory=list)
    per_file: dict[str, dict[str, int]] = field(default_factory=dict)
