"""The store: one chunked HDF5 file per dataset, of cubes or of time series.

``CubeStore`` is the handle every other module uses. The work is split by job:

- :mod:`.store_schema`: what a store file holds (the layout of both sample kinds), the batch an
  append takes, content hashes, schema errors;
- :mod:`.store_writer`: creating a store and appending batches (new samples only, by hash);
- :mod:`.store_reader`: reading samples with ``os.preadv`` at cached chunk offsets, or h5py.

Everything importable from here before the split still is (``CubeStore``, ``TileBatch``,
``AppendSummary``, ``StoreSchemaError``, ``content_hash``, ``read_samples``, ...).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import h5py
import numpy as np

from .store_reader import PassMapping, SampleReader, read_samples
from .store_schema import (
    FORMAT_VERSION,
    SAMPLE_DATASET,
    SAMPLE_LAYOUTS,
    VALID_DATASET,
    AppendSummary,
    StoreSchemaError,
    TileBatch,
    content_hash,
    layout_of,
    read_info,
    series_content_hash,
)
from .store_writer import StoreMark, append_batches, create_store, mark_store, roll_back, set_class_names

__all__ = [
    "FORMAT_VERSION", "SAMPLE_DATASET", "SAMPLE_LAYOUTS", "AppendSummary", "CubeStore", "StoreMark",
    "StoreSchemaError", "TileBatch", "content_hash", "read_samples", "series_content_hash",
]


class CubeStore:
    """A handle on a store file (cube or series layout: see :mod:`.store_schema`).

    Metadata calls and appends open the HDF5 file only while they run. Sample reads
    (:meth:`read`, :meth:`read_one`, and :meth:`read_valid` for series) keep a read handle,
    opened at the first read in each process (a DataLoader worker opens its own; pickling drops
    it): a plain read-only file descriptor and the byte offset of every sample's chunk, so they
    hold no HDF5 handle that would stop another writer in this process. :meth:`append` and
    :meth:`create` close it; a read of an index beyond the known sample count refreshes it
    (another handle appended), and a file replaced on disk is reopened. ``close()`` or
    ``with CubeStore(path) as store:`` releases it early.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._reader: SampleReader | None = None  # the samples
        self._valid_reader: SampleReader | None = None  # a series store's validity masks
        self._reader_lock = threading.Lock()
        self._reader_pid = os.getpid()

    def __repr__(self) -> str:
        return f"CubeStore({str(self.path)!r})"

    def __getstate__(self) -> dict:
        return {"path": self.path}  # file descriptors and locks do not cross processes

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"])

    def __enter__(self) -> "CubeStore":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Release the read handles (the next read opens new ones)."""
        for slot in ("_reader", "_valid_reader"):
            reader = getattr(self, slot)
            setattr(self, slot, None)
            if reader is not None:
                reader.close()

    def _sample_reader(self, max_index: int = -1) -> SampleReader:
        """This process's read handle on the samples, refreshed when ``max_index`` is beyond its count."""
        reader = self._reader
        if reader is not None and self._reader_pid == os.getpid() and reader.current() and max_index < reader.num_samples:
            return reader
        return self._open_reader("_reader", None, np.float32, max_index)

    def _mask_reader(self, max_index: int = -1) -> SampleReader:
        """The same for a series store's ``valid`` masks (uint8 on disk, read as bool)."""
        reader = self._valid_reader
        if reader is not None and self._reader_pid == os.getpid() and reader.current() and max_index < reader.num_samples:
            return reader
        return self._open_reader("_valid_reader", VALID_DATASET, bool, max_index)

    def _open_reader(self, slot: str, name: str | None, dtype, max_index: int) -> SampleReader:
        pid = os.getpid()
        if self._reader_pid != pid:  # forked: a lock and file descriptors of our own
            self._reader_lock = threading.Lock()
            self._reader_pid = pid
            self.close()
        with self._reader_lock:
            reader = getattr(self, slot)
            if reader is not None and reader.current():
                if max_index >= reader.num_samples:
                    reader.refresh()
                return reader
            if reader is not None:
                reader.close()
            setattr(self, slot, None)
            self._require()
            if name == VALID_DATASET and self.sample_layout != "series":
                raise StoreSchemaError(f"{self.path}: a cube store has no validity masks (its sample_layout is "
                                       f"'cube'); they belong to series stores")
            reader = SampleReader(self.path, name, dtype)
            setattr(self, slot, reader)
            return reader

    # ---- reading -------------------------------------------------------------------------
    def exists(self) -> bool:
        return self.path.is_file()

    def _require(self) -> None:
        if not self.exists():
            raise FileNotFoundError(
                f"{self.path}: no cube store here. Run `kedro run --pipeline ingestion "
                f"--params dataset=<name>` first."
            )

    def open(self) -> h5py.File:
        self._require()
        return h5py.File(self.path, "r")

    @property
    def info(self) -> dict:
        """Store-level attributes as plain Python values, plus the sample count and
        ``sample_layout`` (``cube`` or ``series``; ``max_seq_len`` is None for cubes)."""
        with self.open() as f:
            return read_info(f)

    @property
    def sample_layout(self) -> str:
        """``cube`` or ``series`` (a store written before layouts were recorded is ``cube``)."""
        with self.open() as f:
            return layout_of(f)

    def __len__(self) -> int:
        with self.open() as f:
            return int(f[SAMPLE_DATASET[layout_of(f)]].shape[0])

    def ingestion_log(self) -> list[dict]:
        with self.open() as f:
            return json.loads(f.attrs["ingestion_log"])

    def column(self, name: str) -> np.ndarray:
        """One per-sample dataset read whole (``labels``, ``sample_ids``, ``window``, and for a
        series store ``day_of_year``, ``date_mask``, ...)."""
        with self.open() as f:
            if name not in f:
                raise KeyError(f"{self.path}: the store has no '{name}' dataset")
            data = f[name][()]
        if data.dtype.kind in "SO":
            return np.array([v.decode() if isinstance(v, bytes) else v for v in data], dtype=object)
        return data

    @property
    def plain_reads(self) -> bool:
        """True when sample reads bypass HDF5: uncompressed, one native float32 sample per chunk."""
        return self._sample_reader().table[3] is not None

    def read(self, indices: Sequence[int] | np.ndarray, out: np.ndarray | None = None, *,
             streaming: bool = False) -> np.ndarray:
        """Samples at ``indices`` as float32 (k, C, S, S), or (k, L, C, S, S) for a series store,
        in the order given (negative indices count from the end). ``out``, when given, is filled
        and returned.

        Reads copy from the store file mapped in memory, so the pages read stay in the process's
        resident memory (shared with the page cache). A one-pass scan over the store (statistics)
        passes ``streaming=True``: it reads with ``preadv`` and its resident memory stays flat."""
        order = np.asarray(indices, dtype=np.int64).reshape(-1)
        reader = self._sample_reader(int(order.max()) if len(order) else -1)
        return reader.read(order, out, streaming=streaming)

    def map_for_pass(self, indices: Sequence[int] | np.ndarray) -> PassMapping | None:
        """The samples at ``indices`` mapped read-only for one pass that reads them in place
        (:class:`~.store_reader.PassMapping`: its ``offsets`` follow ``indices``), or None when
        they cannot be (compressed, an unusual layout, a chunk not written, mapping refused);
        the caller closes it."""
        order = np.asarray(indices, dtype=np.int64).reshape(-1)
        return self._sample_reader(int(order.max()) if len(order) else -1).map_for_pass(order)

    def read_one(self, index: int, out: np.ndarray | None = None) -> np.ndarray:
        """The sample at ``index`` as float32 (C, S, S) or (L, C, S, S); ``out``, when given, is
        filled and returned.

        The call a ``torch`` Dataset's ``__getitem__`` makes: the file stays open between calls.
        """
        index = int(index)
        return self._sample_reader(index).read_one(index, out)

    def read_valid(self, indices: Sequence[int] | np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """A series store's validity masks at ``indices``, bool (k, L, S, S) (True = observed)."""
        order = np.asarray(indices, dtype=np.int64).reshape(-1)
        return self._mask_reader(int(order.max()) if len(order) else -1).read(order, out)

    def read_valid_one(self, index: int, out: np.ndarray | None = None) -> np.ndarray:
        """The validity mask of series ``index``, bool (L, S, S), read like :meth:`read_one`."""
        index = int(index)
        return self._mask_reader(index).read_one(index, out)

    def read_label_maps(self, indices: Sequence[int] | np.ndarray) -> np.ndarray | None:
        with self.open() as f:
            if "label_maps" not in f:
                return None
            order = np.asarray(indices, dtype=np.int64)
            return np.stack([f["label_maps"][int(i)] for i in order]) if len(order) else None

    # ---- writing -------------------------------------------------------------------------
    def create(
        self,
        *,
        num_bands: int,
        tile_size: int,
        band_names: list[str] | None,
        wavelengths_nm: list[float] | None,
        class_names: list[str] | None = None,
        compression: str | None = None,
        sample_layout: str = "cube",
        max_seq_len: int | None = None,
    ) -> None:
        """Create an empty store; the parent folder is made when missing. A ``series`` store
        pads every sample to ``max_seq_len`` dates."""
        self.close()
        create_store(self.path, num_bands=num_bands, tile_size=tile_size, band_names=band_names,
                     wavelengths_nm=wavelengths_nm, class_names=class_names, compression=compression,
                     sample_layout=sample_layout, max_seq_len=max_seq_len)

    def set_class_names(self, class_names: list[str]) -> None:
        """Record the class list (new classes are appended by ingestion, so old labels keep their index)."""
        self.close()
        set_class_names(self.path, class_names)

    def append(
        self, batches: Iterable[TileBatch], *, log_entry: Callable[[AppendSummary], dict] | None = None
    ) -> AppendSummary:
        """Append samples whose content hash is not in the store yet; record the append in the log.

        A batch of the other sample layout (series into a cube store, or the reverse) is refused
        with a :class:`StoreSchemaError`. See :func:`.store_writer.append_batches`. The read
        handles of this ``CubeStore`` are closed first; other handles see the new samples at
        their next read of them.
        """
        self.close()
        return append_batches(self.path, batches, log_entry=log_entry)

    def mark(self) -> StoreMark:
        """The store as it is now (or its absence), for :meth:`roll_back` after a run of appends."""
        return mark_store(self.path)

    def roll_back(self, mark: StoreMark) -> None:
        """Remove every sample appended since ``mark`` (and the store, when it did not exist then);
        see :func:`.store_writer.roll_back`."""
        self.close()
        roll_back(self.path, mark)
