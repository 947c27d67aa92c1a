"""Ingestion, step 2: read each accepted file's pixels once, reject what only pixels show, tile,
repair, hash and append the new tiles to the store, rolling it back when the run raises.

Reading, checking, cutting and hashing run on a thread a few batches ahead of the store's
writes (:func:`.run_ahead.run_ahead`). Files whose pixels the scan found plain are read with
positioned reads and no HDF5 call, so that thread and the writes do not wait for each other.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .ingest_plan import (
    TILES_PER_BATCH,
    FileEntry,
    IngestionError,
    IngestionParams,
    IngestionPlan,
    Rejections,
    _read,
    band_count_mismatch,
    nonfinite_fraction,
    too_many_nonfinite,
)
from .plain_reads import read_plain_cube, read_plain_tiles
from .readers import CubeFileError
from .run_ahead import run_ahead
from .store import CubeStore, TileBatch
from .store_schema import HASH_FUNCTIONS
from .tiling import RepairResult, batched, cut, cut_maps, majority_labels, repair_nonfinite, tile_windows

log = logging.getLogger("spectral_training.cubes.ingest")


@dataclass
class AppendCounters:
    tiles_total: int = 0
    repaired_tiles: int = 0
    repaired_values: int = 0
    rejected_tiles: list[dict] = field(default_factory=list)
    failed_files: list[dict] = field(default_factory=list)
    per_file: dict[str, dict] = field(default_factory=dict)


def tile_labels(count: int, file_class: int | None, maps: np.ndarray | None) -> np.ndarray:
    """Labels of ``count`` tiles: their file's class (class folders), else each tile's majority
    in its label map, else -1 (unlabelled)."""
    if file_class is not None:
        return np.full(count, file_class, dtype=np.int64)
    if maps is not None:
        return majority_labels(maps)
    return np.full(count, -1, dtype=np.int64)


@dataclass
class SourceTiles:
    """What the append takes from one accepted file: its tiles at ``windows`` (float32 (k, C, T, T),
    cut here or ``None`` to be cut from ``data`` batch by batch), its float32 (C, H, W) pixels
    (``None`` when the tiles came straight from the file), its label map (int32 (H, W) or None)
    and the fraction of its values that are NaN/Inf."""

    windows: np.ndarray
    tiles: np.ndarray | None
    data: np.ndarray | None
    label_map: np.ndarray | None
    nonfinite: float

    def cut(self, part: slice) -> np.ndarray:
        return self.tiles[part] if self.tiles is not None else cut(self.data, self.windows[part])


# Tiles cut straight from the file (all of a file's at once) when they hold at most this many
# times the file's pixels (stride = tile_size: the edge windows overlap); overlapping windows are
# cut from the cube batch by batch, so memory holds the cube, not the bigger set of tiles.
STRAIGHT_TILES_MAX_OVERLAP = 1.25


def _read_tiles(path: Path, entry: FileEntry, params: IngestionParams) -> SourceTiles:
    """The file's tiles or pixels: where the scan found the pixels plain and the file is
    unchanged, read by offset with no HDF5 call (so the store's writes go on meanwhile), straight
    into tiles when they do not overlap much; else through the file's reader, which checks the
    header again."""
    c, h, w = entry.shape
    windows = tile_windows(h, w, params.tile_size, params.effective_stride)
    plain = None if entry.has_label_map else entry.plain_pixels
    if plain is not None:
        if len(windows) * params.tile_size**2 <= STRAIGHT_TILES_MAX_OVERLAP * h * w:
            read = read_plain_tiles(path, entry.shape, plain, windows, params.scale)
            if read is not None:
                tiles, nonfinite = read
                return SourceTiles(windows, tiles, None, None, nonfinite / max(c * h * w, 1))
        data = read_plain_cube(path, entry.shape, plain, params.scale)
        if data is not None:
            return SourceTiles(windows, None, data, None, nonfinite_fraction(data))
    cube = _read(path, params)
    if list(cube.data.shape) != list(entry.shape):
        raise CubeFileError(path, f"it changed since the scan: its (C, H, W) is now {list(cube.data.shape)}, the "
                            f"scan found {entry.shape}.", "run ingestion again")
    return SourceTiles(windows, None, cube.data, cube.label_map, nonfinite_fraction(cube.data))


def _read_accepted(path: Path, entry: FileEntry, params: IngestionParams, reject: Rejections) -> SourceTiles | None:
    """The file's tiles or pixels, or None when ``reject`` was told why not."""
    try:
        source = _read_tiles(path, entry, params)
    except Exception as err:  # what only the pixels show, or the file changed or vanished since the scan
        reject.unreadable(entry.file, err)
        return None
    if source.nonfinite > params.max_nonfinite_file:
        reject(entry.file, too_many_nonfinite(source.nonfinite, params))
        return None
    return source


def iter_tile_batches(plan: IngestionPlan, params: IngestionParams, counters: AppendCounters) -> Iterator[TileBatch]:
    """Tiles of every accepted file, ``TILES_PER_BATCH`` at a time, repaired and labelled.

    Each file's pixels are read once, here. A file they reject (unreadable, changed since the
    scan, above ``max_nonfinite_file``) goes to ``counters.failed_files`` with its reason, or,
    with ``params.strict``, raises :class:`IngestionError` before any tile of it is yielded.
    """
    root = Path(plan.raw_root)
    class_index = {name: i for i, name in enumerate(plan.class_names)}
    reject = Rejections(params.strict, counters.failed_files)
    for entry in tqdm(plan.accepted, desc="tile+append", unit="file", disable=not params.show_progress):
        source = _read_accepted(root / entry.file, entry, params, reject)
        if source is None:
            continue
        nonfinite, windows = source.nonfinite, source.windows
        file_counts = counters.per_file.setdefault(entry.file, {
            "nonfinite_fraction": round(nonfinite, 6), "tiles": 0, "repaired_tiles": 0, "rejected_tiles": 0})
        for part in batched(len(windows), TILES_PER_BATCH):
            win = windows[part]
            tiles = source.cut(part)
            # A file with no NaN/Inf has none in its tiles: no per-tile check to make.
            repair = (RepairResult.all_kept(tiles) if nonfinite == 0.0
                      else repair_nonfinite(tiles, params.nan_policy, params.max_nonfinite_tile))
            for i in np.flatnonzero(~repair.kept):
                counters.rejected_tiles.append({
                    "file": entry.file, "window": _window_text(win[i]),
                    "reason": f"{repair.nonfinite_fraction[i]:.1%} non-finite values, above max_nonfinite_tile="
                              f"{params.max_nonfinite_tile} (nan_policy={params.nan_policy})",
                })
            kept = repair.kept
            counters.tiles_total += len(win)
            counters.repaired_tiles += repair.repaired_tiles
            counters.repaired_values += repair.repaired_values
            file_counts["tiles"] += int(kept.sum())
            file_counts["repaired_tiles"] += repair.repaired_tiles
            file_counts["rejected_tiles"] += int((~kept).sum())
            if not kept.any():
                continue
            win = win[kept]
            use_maps = source.label_map is not None and params.label_source != "none"
            maps = cut_maps(source.label_map, win) if use_maps else None
            file_class = None if entry.class_name is None else class_index[entry.class_name]
            labels = tile_labels(len(win), file_class, maps)
            yield TileBatch(
                cubes=tiles if kept.all() else tiles[kept],
                sample_ids=[f"{entry.file}@{r},{c}" for r, c, _, _ in win],
                source_file=entry.file,
                windows=win,
                labels=labels,
                label_maps=maps,
            )
        del source


def _window_text(window: np.ndarray) -> str:
    r, c, h, w = (int(v) for v in window)
    return f"rows {r}:{r + h}, cols {c}:{c + w}"


def append_plan(store: CubeStore, plan: IngestionPlan, params: IngestionParams) -> dict:
    """Create the store when missing, append the plan's new tiles, return the append record.

    The record (also kept in the store's ``ingestion_log``) holds the counts the report needs,
    and in ``failed_files`` the files rejected here, with their reasons. A run that raises (with
    ``strict``, the first file rejected here) leaves the store as it found it: the samples it
    appended are removed, and so is a store it created.
    """
    if not store.exists() and plan.num_bands is None:
        # Every file was rejected: nothing to store, but the report must still say why.
        log.error("no file of %s could be ingested (%d rejected)", plan.raw_root, len(plan.rejected))
        return {"appended": 0, "duplicates": 0, "tiles_total": 0, "failed_files": [], "per_file": {}}
    before = store.mark()
    try:
        return _append(store, plan, params)
    except BaseException:
        store.roll_back(before)
        log.error("ingestion of %s stopped; the store %s is back as it was before the run", plan.raw_root, store.path)
        raise


def _append(store: CubeStore, plan: IngestionPlan, params: IngestionParams) -> dict:
    if not store.exists():
        store.create(
            num_bands=plan.num_bands,
            tile_size=params.tile_size,
            band_names=plan.band_names,
            wavelengths_nm=plan.wavelengths_nm,
            class_names=plan.class_names,
            compression=params.compression,
        )
    counters = AppendCounters()
    info = store.info
    plan = _reconcile_with_store(plan, info, store.path, params, counters)
    store.set_class_names(plan.class_names)
    started = time.perf_counter()

    def record(summary) -> dict:
        return {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "files": [e.file for e in plan.accepted],
            "appended": summary.appended,
            "duplicates": summary.duplicates,
            "duplicate_ids": summary.duplicate_ids[:1000],
            "tiles_total": counters.tiles_total,
            "repaired_tiles": counters.repaired_tiles,
            "repaired_values": counters.repaired_values,
            "rejected_tiles": counters.rejected_tiles,
            "failed_files": counters.failed_files,
            "per_file": {f: {**c, **summary.per_file.get(f, {})} for f, c in counters.per_file.items()},
            "seconds": round(time.perf_counter() - started, 3),
        }

    batches = _hashed(iter_tile_batches(plan, params, counters), info["hash_algorithm"])
    # Closed on the way out, also when the store raises: the thread stops at once, rather than
    # when the exception's traceback lets go of the generator.
    with contextlib.closing(run_ahead(batches, depth=BATCHES_AHEAD, name=PRODUCER_THREAD)) as ahead:
        store.append(ahead, log_entry=record)
    return store.ingestion_log()[-1]


BATCHES_AHEAD = 2  # tile batches made while the store writes one: memory holds ~3 batches and one source
PRODUCER_THREAD = "ingest-tiles"


def _hashed(batches: Iterable[TileBatch], algorithm: str) -> Iterator[TileBatch]:
    """The batches with their content hashes computed with the store's ``algorithm`` (on the
    thread that makes them, so the writes never wait for a hash). A store recording an unknown
    algorithm gets them unhashed, and refuses the append with its reason."""
    for batch in batches:
        if algorithm in HASH_FUNCTIONS:
            batch.compute_hashes(algorithm)
        yield batch


def _reconcile_with_store(plan: IngestionPlan, info: dict, store_path: Path, params: IngestionParams,
                          counters: "AppendCounters") -> IngestionPlan:
    """Files must match the store's band count (``info``); classes keep the store's order, new ones go last."""
    accepted = []
    for entry in plan.accepted:
        if entry.shape[0] != info["num_bands"]:
            reason = band_count_mismatch(entry.shape[0], info["num_bands"], f"the store {store_path}")
            if params.strict:
                raise IngestionError(f"{entry.file}: {reason} (strict=true makes the first problem fatal)")
            counters.failed_files.append({"file": entry.file, "reason": reason})
            continue
        accepted.append(entry)
    class_names = list(info["class_names"]) + [c for c in plan.class_names if c not in info["class_names"]]
    return replace(plan, accepted=accepted, class_names=class_names)
