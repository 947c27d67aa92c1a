"""Writing a store: create an empty one, append batches (new samples only, by content hash), and
roll a store back to a mark taken before a run of appends that failed."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from .store_schema import (
    _HASH,
    _STR,
    FORMAT_VERSION,
    HASH_ALGORITHM,
    SAMPLE_DATASET,
    SAMPLE_LAYOUTS,
    VALID_DATASET,
    AppendSummary,
    StoreSchemaError,
    TileBatch,
    compression_options,
    hash_algorithm_of,
    layout_of,
    layout_mismatch,
    plain_layout,
    write_alignment,
)


def create_store(
    path: Path,
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
    """Create an empty store at ``path`` (written beside it, then renamed: never half a file)."""
    if sample_layout not in SAMPLE_LAYOUTS:
        raise ValueError(f"sample_layout '{sample_layout}' is unknown: use one of {SAMPLE_LAYOUTS}")
    if sample_layout == "series" and (max_seq_len is None or int(max_seq_len) < 1):
        raise ValueError(f"a series store needs max_seq_len >= 1 (the dates every sample is padded to), got {max_seq_len}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".creating")
    opts = compression_options(compression)
    c, s = num_bands, tile_size
    with h5py.File(tmp, "w") as f:
        if sample_layout == "cube":
            f.create_dataset("cubes", (0, c, s, s), maxshape=(None, c, s, s), dtype="f4", chunks=(1, c, s, s), **opts)
        else:
            n = int(max_seq_len)
            f.create_dataset("series", (0, n, c, s, s), maxshape=(None, n, c, s, s), dtype="f4",
                             chunks=(1, n, c, s, s), **opts)
            rows = max(1, 4096 // n)
            f.create_dataset("day_of_year", (0, n), maxshape=(None, n), dtype="i2", chunks=(rows, n))
            f.create_dataset("date_mask", (0, n), maxshape=(None, n), dtype=bool, chunks=(rows, n))
            f.create_dataset(VALID_DATASET, (0, n, s, s), maxshape=(None, n, s, s), dtype="u1",
                             chunks=(1, n, s, s), **opts)
            f.attrs["max_seq_len"] = n
        f.create_dataset("labels", (0,), maxshape=(None,), dtype="i8", chunks=(4096,))
        f.create_dataset("sample_ids", (0,), maxshape=(None,), dtype=_STR, chunks=(4096,))
        f.create_dataset("content_hash", (0,), maxshape=(None,), dtype=_HASH, chunks=(4096,))
        f.create_dataset("source_file", (0,), maxshape=(None,), dtype=_STR, chunks=(4096,))
        f.create_dataset("window", (0, 4), maxshape=(None, 4), dtype="i4", chunks=(4096, 4))
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["sample_layout"] = sample_layout
        f.attrs["num_bands"] = num_bands
        f.attrs["tile_size"] = tile_size
        f.attrs["band_names"] = json.dumps(band_names or [f"band_{i:03d}" for i in range(num_bands)])
        f.attrs["wavelengths_nm"] = json.dumps(wavelengths_nm)
        f.attrs["class_names"] = json.dumps(class_names or [])
        f.attrs["compression"] = compression or ""
        f.attrs["hash_algorithm"] = HASH_ALGORITHM
        f.attrs["ingestion_log"] = "[]"
    tmp.replace(path)


def set_class_names(path: Path, class_names: list[str]) -> None:
    with h5py.File(path, "r+") as f:
        if json.loads(f.attrs["class_names"]) != class_names:
            f.attrs["class_names"] = json.dumps(class_names)


def _check_batch(batch: TileBatch, layout: str, sample_shape: tuple[int, ...], path: Path) -> None:
    """A batch must have the store's layout and shapes; the error says which and what to do."""
    if batch.layout != layout:
        raise layout_mismatch(batch.source_file, path, found=layout, given=batch.layout)
    if batch.cubes.shape[1:] != sample_shape:
        if layout == "cube":
            raise StoreSchemaError(
                f"{batch.source_file}: tiles of shape {batch.cubes.shape[1:]} do not fit the store "
                f"{path} of (C, T, T) = {sample_shape}. Use the same tile_size, or a new dataset name."
            )
        raise StoreSchemaError(
            f"{batch.source_file}: series of shape {batch.cubes.shape[1:]} do not fit the store {path} of "
            f"(max_seq_len, C, S, S) = {sample_shape}. Pad every series to the store's max_seq_len "
            f"{sample_shape[0]}, and use the same bands and tile_size, or a new dataset name."
        )
    if layout == "series":
        k, n = len(batch.cubes), sample_shape[0]
        want = {"day_of_year": (k, n), "date_mask": (k, n), "valid": (k, n, *sample_shape[2:])}
        for name, shape in want.items():
            got = getattr(batch, name)
            if got is None or tuple(got.shape) != shape:
                raise StoreSchemaError(f"{batch.source_file}: the batch's {name} has shape "
                                       f"{None if got is None else tuple(got.shape)}, the store needs {shape}")
        if np.asarray(batch.valid)[~np.asarray(batch.date_mask, dtype=bool)].any():
            raise StoreSchemaError(f"{batch.source_file}: pixels of padding dates (date_mask False) are marked "
                                   f"valid; padding must be invalid everywhere")


def _sample_chunk_bytes(path: Path) -> int:
    """Bytes of one sample's chunk (the alignment is a property of the open, so look first)."""
    with h5py.File(path, "r") as f:
        data = f[SAMPLE_DATASET[layout_of(f)]]
        return int(np.prod(data.chunks)) * data.dtype.itemsize


PROVENANCE_ROWS = 4096  # samples whose provenance rows are written together (one chunk of each column)


def append_batches(
    path: Path, batches: Iterable[TileBatch], *, log_entry: Callable[[AppendSummary], dict] | None = None
) -> AppendSummary:
    """Append samples whose content hash is not in the store yet; record the append in the log.

    Samples are written batch by batch, so memory holds a few at a time. In a batch whose
    hashes are not given, the first samples are written while a thread pool hashes the next
    ones. The provenance of samples written as chunks (labels, ids, hashes, source files,
    windows, ...) is kept for up to ``PROVENANCE_ROWS`` samples and written in one go per
    column (each column write costs ~0.25 ms in h5py, whatever its length), and always before
    this function returns or raises, so no written sample is left without it. ``log_entry`` is
    called once every batch is written and returns what the log records for this append.
    """
    summary = AppendSummary()
    with h5py.File(path, "r+", **write_alignment(_sample_chunk_bytes(path))) as f:
        layout = layout_of(f)
        data = f[SAMPLE_DATASET[layout]]
        sample_shape = tuple(data.shape[1:])
        zeros = (0,) * len(sample_shape)
        algorithm = hash_algorithm_of(f)  # the store's own, so that it never mixes two
        known = {h.decode() for h in f["content_hash"][()]}
        pending = _PendingProvenance(f)
        try:
            for batch in batches:
                _check_batch(batch, layout, sample_shape, path)
                n0 = int(data.shape[0])
                # Uncompressed float32: each kept sample is written as its chunk as soon as its hash is known.
                direct = batch.cubes.dtype == np.dtype("=f4") and plain_layout(data)
                if direct:
                    data.resize(n0 + len(batch.cubes), axis=0)
                keep, hashes = [], []
                try:
                    for i, h in enumerate(batch._hash_stream(algorithm)):
                        hashes.append(h)
                        if h in known:
                            summary.duplicates += 1
                            summary.duplicate_ids.append(batch.sample_ids[i])
                            continue
                        known.add(h)
                        if direct:
                            data.id.write_direct_chunk((n0 + len(keep), *zeros), np.ascontiguousarray(batch.cubes[i]))
                        keep.append(i)
                except BaseException:
                    if direct:
                        data.resize(n0, axis=0)  # no samples of a half-written batch without their provenance
                    raise
                if direct and len(keep) < len(batch.cubes):
                    data.resize(n0 + len(keep), axis=0)  # drop the rows the duplicates would have used
                file_counts = summary.per_file.setdefault(batch.source_file, {"appended": 0, "duplicates": 0})
                file_counts["duplicates"] += len(hashes) - len(keep)
                if not keep:
                    continue
                if not direct:  # written through h5py, after every row before it
                    pending.flush()
                    data.resize(n0 + len(keep), axis=0)
                    data[n0 : n0 + len(keep)] = batch.cubes if len(keep) == len(hashes) else batch.cubes[keep]
                pending.add(batch, np.asarray(keep), hashes, n0)
                if not direct or pending.rows >= PROVENANCE_ROWS:
                    pending.flush()
                file_counts["appended"] += len(keep)
                summary.appended += len(keep)
        finally:
            pending.flush()  # also when a batch raised: the samples written before it keep their provenance
        log = json.loads(f.attrs["ingestion_log"])
        entry = log_entry(summary) if log_entry else {}
        entry.update(appended=summary.appended, duplicates=summary.duplicates, total=int(data.shape[0]))
        log.append(entry)
        f.attrs["ingestion_log"] = json.dumps(log)
    return summary


class _PendingProvenance:
    """Provenance rows of samples already written, kept until ``flush`` writes them at their rows
    (consecutive from the first one's) in one resize and one write per column."""

    def __init__(self, f: h5py.File):
        self.f = f
        self.items: list[tuple[TileBatch, np.ndarray, list[str]]] = []
        self.n0 = 0
        self.rows = 0

    def add(self, batch: TileBatch, keep: np.ndarray, hashes: list[str], n0: int) -> None:
        if not self.items:
            self.n0 = n0
        elif n0 != self.n0 + self.rows:
            raise AssertionError(f"provenance rows out of order: {n0} after {self.n0 + self.rows}")
        self.items.append((batch, keep, hashes))
        self.rows += len(keep)

    def flush(self) -> None:
        if self.items:
            _write_provenance(self.f, self.items, self.n0)
        self.items, self.rows = [], 0


def _write_provenance(f: h5py.File, items: list[tuple[TileBatch, np.ndarray, list[str]]], n0: int) -> None:
    """Write the provenance of the kept samples of ``items`` (batch, kept positions, hashes), at
    rows n0.. in order."""
    n1 = n0 + sum(len(keep) for _, keep, _ in items)
    series = items[0][0].layout == "series"
    names = ["labels", "sample_ids", "content_hash", "source_file", "window"]
    if series:
        names += ["day_of_year", "date_mask", VALID_DATASET]
    for name in names:
        f[name].resize(n1, axis=0)
    f["labels"][n0:n1] = np.concatenate([batch.labels[keep] for batch, keep, _ in items])
    f["sample_ids"][n0:n1] = [batch.sample_ids[i] for batch, keep, _ in items for i in keep]
    f["content_hash"][n0:n1] = np.array([hashes[i] for _, keep, hashes in items for i in keep], dtype=_HASH)
    f["source_file"][n0:n1] = [batch.source_file for batch, keep, _ in items for _ in keep]
    f["window"][n0:n1] = np.concatenate([batch.windows[keep] for batch, keep, _ in items])
    if series:
        f["day_of_year"][n0:n1] = np.concatenate([np.asarray(b.day_of_year)[k].astype(np.int16) for b, k, _ in items])
        f["date_mask"][n0:n1] = np.concatenate([np.asarray(b.date_mask, dtype=bool)[k] for b, k, _ in items])
        f[VALID_DATASET][n0:n1] = np.concatenate([np.asarray(b.valid)[k].astype(np.uint8) for b, k, _ in items])
    with_maps = any(batch.label_maps is not None for batch, _, _ in items)
    if with_maps and "label_maps" not in f:
        s = int(f.attrs["tile_size"])
        # Samples appended before the first per-pixel map count as unlabelled everywhere.
        f.create_dataset("label_maps", (n0, s, s), maxshape=(None, s, s), dtype="i4", chunks=(1, s, s), fillvalue=0)
    if "label_maps" in f:
        f["label_maps"].resize(n1, axis=0)
        row = n0
        for batch, keep, _ in items:
            if batch.label_maps is not None:
                f["label_maps"][row : row + len(keep)] = batch.label_maps[keep]
            row += len(keep)


# ---- rolling back a failed run -----------------------------------------------------------------
# The store attributes an append run changes (set_class_names, the log append_batches writes).
_RUN_ATTRIBUTES = ("class_names", "ingestion_log")


@dataclass(frozen=True)
class StoreMark:
    """A store as a run of appends found it: whether it existed, its sample count, the names of
    its datasets, and the attributes a run changes. See :func:`roll_back`."""

    exists: bool
    samples: int = 0
    datasets: frozenset[str] = frozenset()
    attributes: tuple[tuple[str, str], ...] = ()


def mark_store(path: Path) -> StoreMark:
    """The mark :func:`roll_back` returns the store at ``path`` to (a store not created yet too)."""
    if not path.is_file():
        return StoreMark(exists=False)
    with h5py.File(path, "r") as f:
        samples = int(f[SAMPLE_DATASET[layout_of(f)]].shape[0])
        attributes = tuple((name, f.attrs[name]) for name in _RUN_ATTRIBUTES if name in f.attrs)
        return StoreMark(True, samples, frozenset(f.keys()), attributes)


def roll_back(path: Path, mark: StoreMark) -> None:
    """Put the store back as ``mark`` found it; a store that did not exist then is removed.

    Appends only add samples at the end of every per-sample dataset (each dataset of a store is
    one row per sample along its first, resizable axis), so truncating them all to the marked
    count removes exactly the samples appended since; datasets made since (``label_maps``) are
    deleted and the attributes a run changes (class names, ingestion log) restored. The file does
    not shrink: HDF5 keeps the freed space.
    """
    if not mark.exists:
        path.unlink(missing_ok=True)
        path.with_name(path.name + ".creating").unlink(missing_ok=True)
        return
    with h5py.File(path, "r+") as f:
        for name in list(f.keys()):
            if name not in mark.datasets:
                del f[name]
                continue
            dataset = f[name]
            if isinstance(dataset, h5py.Dataset) and dataset.maxshape[:1] == (None,) and dataset.shape[0] > mark.samples:
                dataset.resize(mark.samples, axis=0)
        for name, value in mark.attributes:
            if f.attrs.get(name) != value:
                f.attrs[name] = value
