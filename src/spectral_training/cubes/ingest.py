"""Ingestion: scan a raw dataset folder, validate every file, tile it, append it to the store.

Two steps, and each file's pixels are read once:

1. :func:`scan_folder` reads the header of every supported file (:func:`.readers.read_cube_header`:
   no pixel), checks it (readable, a cube, big enough for a tile, the dataset's band count) and
   returns an :class:`IngestionPlan` with the accepted files and the rejected ones with reasons.
2. :func:`append_plan` reads each accepted file's pixels, rejects the file when they cannot be
   read or when more than ``max_nonfinite_file`` of its values are NaN/Inf, tiles it, repairs or
   rejects non-finite tiles, and appends new tiles (by content hash) to the store. A file
   rejected here is listed with its reason beside the scan's rejections (the append's
   ``failed_files``, the report's ``rejected``).

With ``strict``, the first rejected file raises :class:`IngestionError`; one found during the
append also rolls the store back to what it was before the run (a store the run created is
removed). Files under the raw folder are only ever opened read-only.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .readers import SUPPORTED_SUFFIXES, CubeFileError, CubeHeader, RawCube, read_cube, read_cube_header
from .splits import BUFFER, block_size_warning, block_split_of, split_of, validate_block_px, validate_fractions
from .store import CubeStore, TileBatch
from .tiling import NAN_POLICIES, RepairResult, batched, cut, cut_maps, majority_labels, repair_nonfinite, tile_windows

log = logging.getLogger(__name__)

LABEL_SOURCES = ("auto", "folders", "maps", "none")
INDEX_COLUMNS = {
    "store_index": "int64", "sample_id": "str", "source_file": "str", "window": "str", "row": "int32",
    "col": "int32", "content_hash": "str", "label": "int64", "split": "str",
}
TILES_PER_BATCH = 64


@dataclass
class IngestionParams:
    """Everything ingestion reads from ``parameters_ingestion.yml``."""

    tile_size: int = 32
    stride: int | None = None  # None: tile_size (no overlap)
    layout: str = "auto"
    cube_key: str | None = None
    labels_key: str = "labels"
    scale: float | None = None
    label_source: str = "auto"
    nan_policy: str = "band_mean"
    max_nonfinite_tile: float = 0.01
    max_nonfinite_file: float = 0.25
    strict: bool = False
    compression: str | None = None
    splits: dict = field(default_factory=lambda: {"train": 0.8, "val": 0.1, "test": 0.1})
    split_block_px: int | None = None  # None: split per tile; B: per B x B block of each file
    show_progress: bool = True

    @classmethod
    def from_dict(cls, raw: dict) -> "IngestionParams":
        known = set(cls.__dataclass_fields__)
        unknown = set(raw) - known
        if unknown:
            raise ValueError(
                f"ingestion parameters: unknown key(s) {sorted(unknown)}; known keys are {sorted(known)}"
            )
        params = cls(**raw)
        params.validate()
        return params

    def validate(self) -> None:
        if int(self.tile_size) < 1:
            raise ValueError(f"ingestion.tile_size must be a positive number of pixels, got {self.tile_size}")
        if self.stride is not None and int(self.stride) < 1:
            raise ValueError(f"ingestion.stride must be positive or null, got {self.stride}")
        if self.layout not in ("auto", "HWC", "CHW"):
            raise ValueError(f"ingestion.layout '{self.layout}' is unknown: use auto, HWC or CHW")
        if self.label_source not in LABEL_SOURCES:
            raise ValueError(f"ingestion.label_source '{self.label_source}' is unknown: use one of {LABEL_SOURCES}")
        if self.nan_policy not in NAN_POLICIES:
            raise ValueError(f"ingestion.nan_policy '{self.nan_policy}' is unknown: use one of {NAN_POLICIES}")
        for name in ("max_nonfinite_tile", "max_nonfinite_file"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise ValueError(f"ingestion.{name} is a fraction between 0 and 1, got {getattr(self, name)}")
        self.splits = validate_fractions(self.splits)
        self.split_block_px = validate_block_px(self.split_block_px)

    @property
    def effective_stride(self) -> int:
        return int(self.stride or self.tile_size)


@dataclass
class FileEntry:
    file: str  # relative to the raw folder, with forward slashes
    shape: list[int]  # (C, H, W)
    class_name: str | None
    has_label_map: bool
    # A series scan reads the data and records it here; a cube's is measured when its pixels are
    # read, by the append, and reported from the append's record.
    nonfinite_fraction: float | None = None


@dataclass
class IngestionPlan:
    """The outcome of the scan: what will be appended and what was rejected, with reasons."""

    dataset: str
    raw_root: str
    num_bands: int | None
    band_names: list[str] | None
    wavelengths_nm: list[float] | None
    class_names: list[str]
    accepted: list[FileEntry] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)
    params: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> "IngestionPlan":
        data = dict(raw)
        data["accepted"] = [FileEntry(**entry) for entry in data.get("accepted", [])]
        return cls(**data)


class IngestionError(RuntimeError):
    """A problem that stops ingestion (with ``strict=true``, any rejected file)."""


class Rejections:
    """The files a scan (or the append, for what only pixels show) rejects, each with its reason,
    added to ``items``; with ``strict`` the first one raises :class:`IngestionError` instead
    (shared by the cube and the series ingestion)."""

    def __init__(self, strict: bool, items: list[dict] | None = None):
        self.strict = strict
        self.items: list[dict] = [] if items is None else items

    def __call__(self, rel: str, reason: str) -> None:
        self.items.append({"file": rel, "reason": reason})
        log.warning("rejected %s: %s", rel, reason)
        if self.strict:
            raise IngestionError(f"{rel}: {reason} (strict=true makes the first problem fatal; set strict=false to skip it)")

    def unreadable(self, rel: str, err: Exception) -> None:
        """A file its reader refused (a :class:`CubeFileError` with its fix) or failed on."""
        if isinstance(err, CubeFileError):
            self(rel, f"{err.reason} Fix: {err.fix}")
        else:  # a reader bug or an exotic file must not stop the folder
            self(rel, f"could not be read ({type(err).__name__}: {err}). Fix: check the file opens in its own tools")


# ---- dataset folders --------------------------------------------------------------------------
def check_dataset_name(name: str) -> str:
    """A dataset name is a plain folder name: no path separator, no '..', not empty."""
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name or ".." in name:
        raise ValueError(
            f"dataset name {name!r} is not a plain folder name: use the name of a folder under "
            f"data/01_raw/ (letters, digits, '_', '-'), with no '/', '\\' or '..'"
        )
    if name.startswith(".") or any(ord(ch) < 32 for ch in name):
        raise ValueError(f"dataset name {name!r} is not a plain folder name (hidden or control characters)")
    return name


def resolve_dataset_folder(raw_root: str | Path) -> Path:
    """The raw folder of a dataset; an error lists the datasets that do exist when it is missing."""
    folder = Path(raw_root)
    check_dataset_name(folder.name)
    if not folder.is_dir():
        parent = folder.parent
        existing = sorted(p.name for p in parent.iterdir() if p.is_dir() and not p.name.startswith(".")) if parent.is_dir() else []
        listing = ", ".join(existing) if existing else "none yet (run `kedro run --pipeline demo_data` for the demo)"
        raise FileNotFoundError(
            f"dataset '{folder.name}' has no folder {folder}. Datasets that exist: {listing}. "
            f"Put your files in {folder}/ or pass --params dataset=<one of those>."
        )
    return folder


def list_candidate_files(folder: Path) -> tuple[list[Path], list[dict]]:
    """Supported files under ``folder`` (recursive, sorted) and the skipped ones with a reason."""
    supported, skipped = [], []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if any(part.startswith(".") for part in Path(rel).parts):
            continue  # hidden files and folders (.DS_Store, .ipynb_checkpoints) are not data
        if path.suffix.lower() in SUPPORTED_SUFFIXES:
            supported.append(path)
        elif path.name.lower() not in ("readme", "readme.md", "readme.txt", "licence", "license", "license.txt"):
            skipped.append(
                {"file": rel, "reason": f"unsupported file type '{path.suffix or path.name}': "
                 f"convert it to one of {', '.join(sorted(SUPPORTED_SUFFIXES))} or move it out of the folder"}
            )
    return supported, skipped


def class_of(rel: str, label_source: str, use_folders: bool) -> str | None:
    parts = rel.split("/")
    if label_source == "folders" or (label_source == "auto" and use_folders):
        return parts[0] if len(parts) > 1 else None
    return None


def folders_look_like_classes(rels: list[str]) -> bool:
    """``auto`` reads class sub-folders when every file sits in one of at least two sub-folders."""
    tops = {r.split("/")[0] for r in rels if "/" in r}
    return bool(rels) and all("/" in r for r in rels) and len(tops) >= 2


def nonfinite_fraction(data: np.ndarray) -> float:
    """Fraction of NaN/Inf values; one cheap sum decides for the usual all-finite cube."""
    if not data.size:
        return 1.0
    if np.isfinite(data.sum(dtype=np.float32)):  # NaN/Inf propagate; an overflow falls through
        return 0.0
    return float(1.0 - np.count_nonzero(np.isfinite(data)) / data.size)


def too_many_nonfinite(fraction: float, params: IngestionParams) -> str:
    """The rejection reason for a file above ``max_nonfinite_file``."""
    return (f"{fraction:.1%} of its values are non-finite (NaN/Inf), above max_nonfinite_file="
            f"{params.max_nonfinite_file}. Fix: mask or fill the invalid pixels, or raise the threshold")


# ---- step 1: scan ------------------------------------------------------------------------------
def _reading_options(params: IngestionParams) -> dict:
    # Photos are cropped and resized to one tile, so the scan's checks see what is stored.
    return {"cube_key": params.cube_key, "layout": params.layout, "scale": params.scale,
            "labels_key": params.labels_key, "photo_size": int(params.tile_size)}


def _read(path: Path, params: IngestionParams) -> RawCube:
    return read_cube(path, **_reading_options(params))


def _read_header(path: Path, params: IngestionParams) -> CubeHeader:
    return read_cube_header(path, **_reading_options(params))


def scan_folder(
    raw_root: str | Path, params: IngestionParams, *, store: CubeStore | None = None, dataset: str | None = None
) -> IngestionPlan:
    """Read the header of every supported file (no pixel) and decide which ones can be ingested.

    The band count every file must have is the store's when it exists, else the most common
    one in the folder. With ``params.strict`` the first rejected file raises :class:`IngestionError`.
    What only the pixels show (unreadable data, too many non-finite values) is checked by the
    append, which reads them.
    """
    folder = resolve_dataset_folder(raw_root)
    files, skipped = list_candidate_files(folder)
    rels = [p.relative_to(folder).as_posix() for p in files]
    use_folders = params.label_source == "folders" or (
        params.label_source == "auto" and folders_look_like_classes(rels)
    )
    info = store.info if store is not None and store.exists() else None

    reject = Rejections(params.strict)
    for entry in skipped:
        reject(entry["file"], entry["reason"])

    candidates: list[tuple[FileEntry, CubeHeader]] = []
    for path, rel in tqdm(list(zip(files, rels)), desc="scan", unit="file", disable=not params.show_progress):
        try:
            header = _read_header(path, params)
        except Exception as err:
            reject.unreadable(rel, err)
            continue
        c, h, w = header.shape
        if h < params.tile_size or w < params.tile_size:
            reject(rel, f"image is {h}x{w} px, smaller than tile_size {params.tile_size}. Fix: lower ingestion.tile_size")
            continue
        entry = FileEntry(rel, [c, h, w], class_of(rel, params.label_source, use_folders), header.has_label_map)
        candidates.append((entry, header))

    num_bands = info["num_bands"] if info else _most_common_band_count([e for e, _ in candidates])
    accepted: list[FileEntry] = []
    for entry, cube in candidates:
        if entry.shape[0] != num_bands:
            where = f"the store {store.path}" if info else "most files of the dataset"
            reject(entry.file, band_count_mismatch(entry.shape[0], num_bands, where))
            continue
        accepted.append(entry)

    metadata_source = next((header for entry, header in candidates if entry in accepted), None)
    class_names = list(info["class_names"]) if info else []
    for entry in accepted:
        if entry.class_name is not None and entry.class_name not in class_names:
            class_names.append(entry.class_name)  # new classes go last so old labels keep their index
    if info is None:
        class_names = sorted(class_names)

    return IngestionPlan(
        dataset=dataset or folder.name,
        raw_root=str(folder),
        num_bands=num_bands,
        band_names=(info["band_names"] if info else metadata_source.band_names if metadata_source else None),
        wavelengths_nm=(info["wavelengths_nm"] if info else metadata_source.wavelengths_nm if metadata_source else None),
        class_names=class_names,
        accepted=accepted,
        rejected=reject.items,
        params=asdict(params),
    )


def band_count_mismatch(file_bands: int, expected: int, where: str) -> str:
    """The rejection reason for a file whose band count is not the dataset's."""
    return (f"has {file_bands} bands but {where} has {expected}. "
            f"Fix: ingest it as its own dataset, or resample it to {expected} bands")


def _most_common_band_count(entries: list[FileEntry]) -> int | None:
    if not entries:
        return None
    counts = Counter(e.shape[0] for e in entries)
    best = max(counts.values())
    # On a tie the first file in sorted order decides, so the choice is reproducible.
    return next(e.shape[0] for e in entries if counts[e.shape[0]] == best)


# ---- step 2: append ----------------------------------------------------------------------------
@dataclass
class AppendCounters:
    tiles_total: int = 0
    repaired_tiles: int = 0
    repaired_values: int = 0
    rejected_tiles: list[dict] = field(default_factory=list)
    failed_files: list[dict] = field(default_factory=list)
    per_file: dict[str, dict] = field(default_factory=dict)


def _read_accepted(path: Path, entry: FileEntry, params: IngestionParams, reject: Rejections) -> tuple[RawCube, float] | None:
    """The file's pixels and their non-finite fraction, or None when ``reject`` was told why not."""
    try:
        cube = _read(path, params)
    except Exception as err:  # what only the pixels show, or the file changed or vanished since the scan
        reject.unreadable(entry.file, err)
        return None
    if list(cube.data.shape) != list(entry.shape):
        reject(entry.file, f"changed since the scan: its (C, H, W) is now {list(cube.data.shape)}, the scan found "
               f"{entry.shape}. Fix: run ingestion again")
        return None
    nonfinite = nonfinite_fraction(cube.data)
    if nonfinite > params.max_nonfinite_file:
        reject(entry.file, too_many_nonfinite(nonfinite, params))
        return None
    return cube, nonfinite


READ_AHEAD_MAX_BYTES = 1 << 30  # a file read while the previous one is written is held in memory too


def _read_ahead(entries: list[FileEntry], read: Callable[[FileEntry], Any]) -> Iterator[tuple[FileEntry, Any]]:
    """``(entry, read(entry))`` in order, the next file read on a thread while the caller works on
    this one (cutting and writing it into the store): a plain read of a source releases the GIL
    and holds no HDF5 lock. A file over ``READ_AHEAD_MAX_BYTES`` as float32 is read in turn, so
    memory never holds two big ones. An exception of ``read`` is raised when its file comes."""
    def small(entry: FileEntry) -> bool:
        return 4 * int(np.prod(entry.shape)) <= READ_AHEAD_MAX_BYTES

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-read") as pool:
        pending: Future | None = None  # the read of entries[i], started while entries[i - 1] was worked on
        for i, entry in enumerate(entries):
            result = pending.result() if pending is not None else read(entry)
            following = entries[i + 1] if i + 1 < len(entries) else None
            ahead = following is not None and small(entry) and small(following)
            pending = pool.submit(read, following) if ahead else None
            yield entry, result


def iter_tile_batches(plan: IngestionPlan, params: IngestionParams, counters: AppendCounters) -> Iterator[TileBatch]:
    """Tiles of every accepted file, ``TILES_PER_BATCH`` at a time, repaired and labelled.

    Each file's pixels are read once, here. A file they reject (unreadable, changed since the
    scan, above ``max_nonfinite_file``) goes to ``counters.failed_files`` with its reason, or,
    with ``params.strict``, raises :class:`IngestionError` before any tile of it is yielded.
    """
    root = Path(plan.raw_root)
    class_index = {name: i for i, name in enumerate(plan.class_names)}
    reject = Rejections(params.strict, counters.failed_files)
    reads = _read_ahead(plan.accepted, lambda entry: _read_accepted(root / entry.file, entry, params, reject))
    for entry, read in tqdm(reads, total=len(plan.accepted), desc="tile+append", unit="file",
                            disable=not params.show_progress):
        if read is None:
            continue
        cube, nonfinite = read
        _, h, w = cube.data.shape
        windows = tile_windows(h, w, params.tile_size, params.effective_stride)
        file_counts = counters.per_file.setdefault(entry.file, {
            "nonfinite_fraction": round(nonfinite, 6), "tiles": 0, "repaired_tiles": 0, "rejected_tiles": 0})
        for part in batched(len(windows), TILES_PER_BATCH):
            win = windows[part]
            tiles = cut(cube.data, win)
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
            use_maps = cube.label_map is not None and params.label_source != "none"
            maps = cut_maps(cube.label_map, win) if use_maps else None
            if entry.class_name is not None:
                labels = np.full(len(win), class_index[entry.class_name], dtype=np.int64)
            elif maps is not None:
                labels = majority_labels(maps)
            else:
                labels = np.full(len(win), -1, dtype=np.int64)
            yield TileBatch(
                cubes=tiles if kept.all() else tiles[kept],
                sample_ids=[f"{entry.file}@{r},{c}" for r, c, _, _ in win],
                source_file=entry.file,
                windows=win,
                labels=labels,
                label_maps=maps,
            )
        del cube


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
    plan = _reconcile_with_store(plan, store, params, counters)
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

    store.append(iter_tile_batches(plan, params, counters), log_entry=record)
    return store.ingestion_log()[-1]


def _reconcile_with_store(plan: IngestionPlan, store: CubeStore, params: IngestionParams,
                          counters: "AppendCounters") -> IngestionPlan:
    """Files must match the store's band count; classes keep the store's order, new ones go last."""
    info = store.info
    accepted = []
    for entry in plan.accepted:
        if entry.shape[0] != info["num_bands"]:
            reason = band_count_mismatch(entry.shape[0], info["num_bands"], f"the store {store.path}")
            if params.strict:
                raise IngestionError(f"{entry.file}: {reason} (strict=true makes the first problem fatal)")
            counters.failed_files.append({"file": entry.file, "reason": reason})
            continue
        accepted.append(entry)
    class_names = list(info["class_names"]) + [c for c in plan.class_names if c not in info["class_names"]]
    return replace(plan, accepted=accepted, class_names=class_names)


# ---- step 3: index and report ------------------------------------------------------------------
def build_sample_index(store: CubeStore, splits: dict[str, float], block_px: int | None = None) -> pd.DataFrame:
    """One row per stored sample: id, source, window, hash, label, split.

    The split is a pure function of the sample id: of the id itself when ``block_px`` is None,
    else of the file and the ``block_px`` block of the tile's corner, with tiles reaching into
    a block of another split set aside as ``"buffer"`` (see :mod:`.splits`).
    """
    fractions = validate_fractions(splits)
    block_px = validate_block_px(block_px)
    if not store.exists():
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in INDEX_COLUMNS.items()})
    ids = store.column("sample_ids")
    windows = store.column("window")
    index = pd.DataFrame({
        "store_index": np.arange(len(ids), dtype=np.int64),
        "sample_id": ids.astype(str),
        "source_file": store.column("source_file").astype(str),
        "window": [_window_text(w) for w in windows],
        "row": windows[:, 0] if len(windows) else np.zeros(0, np.int32),
        "col": windows[:, 1] if len(windows) else np.zeros(0, np.int32),
        "content_hash": store.column("content_hash").astype(str),
        "label": store.column("labels").astype(np.int64),
    })
    if block_px is None:
        index["split"] = [split_of(sid, fractions) for sid in index["sample_id"]]
        return index
    tile_hw = [(int(h), int(w)) for h, w in windows[:, 2:4]] if len(windows) else []
    warning = block_size_warning(block_px, max((max(hw) for hw in tile_hw), default=0))
    if warning:
        log.warning(warning)
    index["split"] = [block_split_of(sid, fractions, block_px, hw) for sid, hw in zip(index["sample_id"], tile_hw)]
    buffered = int((index["split"] == BUFFER).sum())
    if buffered:
        log.info("block split (%d px): %d of %d tiles reach into a block of another split and are set aside as '%s'",
                 block_px, buffered, len(index), BUFFER)
    return index


def build_report(plan: IngestionPlan, record: dict, index: pd.DataFrame, store: CubeStore) -> dict:
    """The ingestion report: ingested and rejected files, with counts of tiles, duplicates, repairs."""
    per_file = record.get("per_file", {})
    # A cube's non-finite fraction is measured by the append (in per_file); a series scan's is in the plan.
    ingested = [
        {"file": e.file, "shape_chw": e.shape, "class": e.class_name,
         "nonfinite_fraction": None if e.nonfinite_fraction is None else round(e.nonfinite_fraction, 6),
         **per_file.get(e.file, {})}
        for e in plan.accepted if e.file not in {f["file"] for f in record.get("failed_files", [])}
    ]
    rejected = list(plan.rejected) + list(record.get("failed_files", []))
    return {
        "dataset": plan.dataset,
        "raw_folder": plan.raw_root,
        "store": str(store.path) if store.exists() else None,
        "ingested": ingested,
        "rejected": rejected,
        "rejected_tiles": record.get("rejected_tiles", []),
        "counts": {
            "files_ingested": len(ingested),
            "files_rejected": len(rejected),
            "tiles_cut": record.get("tiles_total", 0),
            "tiles_appended": record.get("appended", 0),
            "duplicates": record.get("duplicates", 0),
            "tiles_rejected": len(record.get("rejected_tiles", [])),
            "repaired_tiles": record.get("repaired_tiles", 0),
            "repaired_values": record.get("repaired_values", 0),
            "samples_in_store": int(len(index)),
            "samples_per_split": {k: int(v) for k, v in index["split"].value_counts().sort_index().items()},
        },
        "num_bands": plan.num_bands,
        "class_names": plan.class_names,
        "params": plan.params,
    }


def ingest_folder(raw_root: str | Path, store_path: str | Path, params: IngestionParams) -> tuple[dict, pd.DataFrame]:
    """All three steps in one call (for scripts, tests and benchmarks): returns report and index."""
    store = CubeStore(store_path)
    plan = scan_folder(raw_root, params, store=store)
    record = append_plan(store, plan, params)
    index = build_sample_index(store, params.splits, params.split_block_px)
    return build_report(plan, record, index, store), index


@dataclass
class PendingAppend:
    """What the ingestion node hands to the store's catalog dataset: the append is done on save.

    The store is appendable, so the catalog entry's dataset appends instead of overwriting, and
    tiles stream from the raw files into the store without being held in memory together.
    """

    plan: IngestionPlan
    params: IngestionParams

    def write_into(self, store: CubeStore) -> dict:
        return append_plan(store, self.plan, self.params)
