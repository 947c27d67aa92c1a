"""Ingestion of time series: scan, validate, tile, drop cloudy dates, pad, append to a series store.

The same three steps as cube ingestion (:mod:`.ingest`), on the same machinery: dataset folders,
class sub-folders, the :class:`~.ingest.IngestionPlan`, rejection with a reason (``strict``
makes the first one fatal), tile windows, content-hash de-duplication, the sample index with its
splits, and the report, which gains the series' own counts. What differs:

- a file is a series (:func:`~.series_readers.read_series`): dates sorted, repeats reported,
  a validity mask from the file's mask and/or its QA band;
- in each tile, a date with less than ``min_valid_fraction`` valid pixels is dropped (counted
  per file); a tile left with no date is rejected with its reason;
- every tile is padded to the store's ``max_seq_len`` dates (``date_mask`` False, ``day_of_year``
  0, ``valid`` False); a file with more dates than that is rejected.

``sample_layout: auto`` (the ``ingestion`` parameter) picks series when the folder holds HDF5
files with a 4-D dataset, so ``kedro run --pipeline data --params dataset=<series folder>`` works.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .ingest import (
    PendingAppend,
    _most_common_band_count,
    build_report,
    build_sample_index,
    class_of,
    folders_look_like_classes,
    list_candidate_files,
    resolve_dataset_folder,
)
from .ingest_append import AppendCounters, _reconcile_with_store, _window_text, tile_labels
from .ingest_plan import TILES_PER_BATCH, FileEntry, IngestionParams, IngestionPlan, Rejections, band_count_mismatch
from .series_readers import QAMapping, RawSeries, has_series, read_series
from .store import CubeStore, TileBatch
from .store_schema import layout_mismatch
from .tiling import batched, cut, cut_maps, tile_windows

log = logging.getLogger(__name__)

LAYOUT_CHOICES = ("auto", "cube", "series")


@dataclass
class SeriesParams:
    """``ingestion.series``: how series files are read, tiled and padded."""

    series_key: str | None = None  # the 4-D dataset; None: the single one in the file
    dates_key: str = "dates"  # ISO date strings
    doy_key: str = "day_of_year"  # or integer days
    mask_key: str = "valid"  # optional (T, H, W), non-zero = observed
    qa: dict | None = field(default_factory=lambda: asdict(QAMapping()))  # None: no QA band is read
    min_valid_fraction: float = 0.2  # a date with less valid area in a tile is dropped from it
    max_seq_len: int | None = None  # None: the longest series of the first ingestion
    tile_size: int | None = 16  # series tiles hold T images: smaller than cube tiles; None = ingestion's
    stride: int | None = None  # None: tile_size when set here, else ingestion's stride

    @classmethod
    def from_dict(cls, raw: dict | None) -> "SeriesParams":
        raw = dict(raw or {})
        unknown = set(raw) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"ingestion.series: unknown key(s) {sorted(unknown)}; known keys are "
                             f"{sorted(cls.__dataclass_fields__)}")
        params = cls(**raw)
        params.qa_mapping  # validates the QA mapping
        if not 0.0 <= float(params.min_valid_fraction) <= 1.0:
            raise ValueError(f"ingestion.series.min_valid_fraction is a fraction 0..1, got {params.min_valid_fraction}")
        for name in ("max_seq_len", "tile_size", "stride"):
            value = getattr(params, name)
            if value is not None and int(value) < 1:
                raise ValueError(f"ingestion.series.{name} must be a positive integer or null, got {value}")
        return params

    @property
    def qa_mapping(self) -> QAMapping | None:
        return QAMapping.from_dict(self.qa)


def split_ingestion_params(raw: dict) -> tuple[IngestionParams, str, SeriesParams]:
    """The ``ingestion`` parameters as (cube parameters, ``sample_layout``, series parameters)."""
    raw = dict(raw)
    layout = str(raw.pop("sample_layout", "auto"))
    if layout not in LAYOUT_CHOICES:
        raise ValueError(f"ingestion.sample_layout '{layout}' is unknown: use one of {LAYOUT_CHOICES}")
    series = SeriesParams.from_dict(raw.pop("series", None))
    return IngestionParams.from_dict(raw), layout, series


def series_tiling(params: IngestionParams, series: SeriesParams) -> IngestionParams:
    """``params`` with the series' own tile size and stride, when set."""
    if series.tile_size is None:
        return params
    return replace(params, tile_size=int(series.tile_size), stride=series.stride)


def detect_sample_layout(raw_root: str | Path, layout: str, series: SeriesParams) -> str:
    """``cube`` or ``series``: as given, or for ``auto`` series when any HDF5 file of the folder
    holds a 4-D dataset (headers only are read)."""
    if layout != "auto":
        return layout
    files, _ = list_candidate_files(resolve_dataset_folder(raw_root))
    return "series" if any(has_series(p, series.series_key) for p in files) else "cube"


def _read(path: Path, params: IngestionParams, series: SeriesParams) -> RawSeries:
    return read_series(path, series_key=series.series_key, layout=params.layout, scale=params.scale,
                       dates_key=series.dates_key, doy_key=series.doy_key, mask_key=series.mask_key,
                       qa=series.qa_mapping, labels_key=params.labels_key)


# ---- step 1: scan ------------------------------------------------------------------------------
def scan_series_folder(raw_root: str | Path, params: IngestionParams, series: SeriesParams, *,
                       dataset: str | None = None) -> IngestionPlan:
    """Read every file once; the plan's ``params`` carry ``sample_layout: series``, the series
    parameters, ``max_seq_len`` and per file its dates, sorting and repeated dates."""
    params = series_tiling(params, series)
    folder = resolve_dataset_folder(raw_root)
    files, skipped = list_candidate_files(folder)
    rels = [p.relative_to(folder).as_posix() for p in files]
    use_folders = params.label_source == "folders" or (params.label_source == "auto" and folders_look_like_classes(rels))
    reject = Rejections(params.strict)
    for entry in skipped:
        reject(entry["file"], entry["reason"])
    candidates: list[tuple[FileEntry, dict, RawSeries]] = []
    for path, rel in tqdm(list(zip(files, rels)), desc="scan series", unit="file", disable=not params.show_progress):
        try:
            raw = _read(path, params, series)
        except Exception as err:
            reject.unreadable(rel, err)
            continue
        t, c, h, w = raw.data.shape
        if h < params.tile_size or w < params.tile_size:
            reject(rel, f"image is {h}x{w} px, smaller than tile_size {params.tile_size}. Fix: lower "
                        f"ingestion.series.tile_size")
            continue
        if raw.nonfinite_fraction > params.max_nonfinite_file:
            reject(rel, f"{raw.nonfinite_fraction:.1%} of its values are non-finite (NaN/Inf), above "
                        f"max_nonfinite_file={params.max_nonfinite_file}. Fix: mask or fill them, or raise the threshold")
            continue
        if not raw.valid.any():
            reject(rel, "no pixel is valid on any date (the validity mask or QA band masks everything). Fix: check "
                        "the mask convention (non-zero = observed) and ingestion.series.qa.valid")
            continue
        if raw.duplicate_dates:
            log.warning("%s: repeated date(s) %s: the first image of each is kept", rel, raw.duplicate_dates)
        entry = FileEntry(rel, [c, h, w], class_of(rel, params.label_source, use_folders), raw.label_map is not None,
                          raw.nonfinite_fraction)
        meta = {"dates": t, "first_date": raw.dates[0] if raw.dates else None,
                "last_date": raw.dates[-1] if raw.dates else None, "sorted_dates": raw.sorted_dates,
                "duplicate_dates": raw.duplicate_dates, "class_names": raw.class_names}
        candidates.append((entry, meta, replace(raw, data=None, valid=None, label_map=None)))  # metadata only

    num_bands = _most_common_band_count([e for e, _, _ in candidates])
    for entry, _, _ in candidates:
        if entry.shape[0] != num_bands:
            reject(entry.file, band_count_mismatch(entry.shape[0], num_bands, "most files of the dataset"))
    candidates = [item for item in candidates if item[0].shape[0] == num_bands]
    longest = max((m["dates"] for _, m, _ in candidates), default=None)
    max_seq_len = int(series.max_seq_len) if series.max_seq_len else longest
    accepted, file_meta, first = [], {}, None
    map_names: list[str] | None = None
    for entry, meta, raw in candidates:
        if meta["dates"] > max_seq_len:
            reject(entry.file, too_many_dates(meta["dates"], max_seq_len, "ingestion.series.max_seq_len"))
            continue
        names = meta.pop("class_names")
        if names:
            if map_names and names[: len(map_names)] != map_names[: len(names)]:
                reject(entry.file, f"its labels name the classes {names}, other files {map_names}. Fix: use one "
                                   f"class numbering in every file of the dataset")
                continue
            map_names = names if not map_names or len(names) > len(map_names) else map_names
        accepted.append(entry)
        file_meta[entry.file] = meta
        first = first or raw
    class_names = sorted({e.class_name for e in accepted if e.class_name is not None})
    if not class_names and map_names:
        class_names = list(map_names)  # indexed by the label value, so map labels get their names
    return IngestionPlan(
        dataset=dataset or folder.name, raw_root=str(folder), num_bands=num_bands if accepted else None,
        band_names=first.band_names if first else None, wavelengths_nm=first.wavelengths_nm if first else None,
        class_names=class_names, accepted=accepted, rejected=reject.items,
        params={**asdict(params), "sample_layout": "series", "series": asdict(series), "max_seq_len": max_seq_len,
                "series_files": file_meta},
    )


def too_many_dates(dates: int, max_seq_len: int, where: str) -> str:
    return (f"has {dates} dates, more than max_seq_len {max_seq_len} ({where}). Fix: ingest it as a dataset of its "
            f"own with a larger ingestion.series.max_seq_len, or split the series")


# ---- step 2: tile and append -------------------------------------------------------------------
@dataclass
class SeriesCounters:
    dates_dropped: int = 0  # (tile, date) pairs dropped for too little valid area
    tiles_no_valid_date: int = 0


def _pack(tiles: np.ndarray, valid: np.ndarray, doy: np.ndarray, keep: np.ndarray, length: int):
    """The kept dates of each tile, first in order, padded to ``length``: series, day_of_year,
    date_mask, valid."""
    k, _, c, s, _ = tiles.shape
    series = np.zeros((k, length, c, s, s), dtype=np.float32)
    days = np.zeros((k, length), dtype=np.int64)
    mask = np.zeros((k, length), dtype=bool)
    observed = np.zeros((k, length, s, s), dtype=bool)
    for i in range(k):
        dates = np.flatnonzero(keep[i])
        n = len(dates)
        series[i, :n], days[i, :n], mask[i, :n], observed[i, :n] = tiles[i, dates], doy[dates], True, valid[i, dates]
    return series, days, mask, observed


def iter_series_batches(plan: IngestionPlan, params: IngestionParams, series: SeriesParams, counters: AppendCounters,
                        extra: SeriesCounters, max_seq_len: int):
    """Padded series tiles of every accepted file, ``TILES_PER_BATCH`` at a time, labelled."""
    root = Path(plan.raw_root)
    class_index = {name: i for i, name in enumerate(plan.class_names)}
    s = params.tile_size
    for entry in tqdm(plan.accepted, desc="tile+append series", unit="file", disable=not params.show_progress):
        try:
            raw = _read(root / entry.file, params, series)
        except Exception as err:  # the file changed or vanished since the scan
            counters.failed_files.append({"file": entry.file, "reason": f"could not be read again: {err}"})
            continue
        t, c, h, w = raw.data.shape
        if t > max_seq_len:
            counters.failed_files.append({"file": entry.file, "reason": too_many_dates(t, max_seq_len, "the store's")})
            continue
        windows = tile_windows(h, w, s, params.effective_stride)
        file_counts = counters.per_file.setdefault(
            entry.file, {"tiles": 0, "rejected_tiles": 0, "dates": t, "dates_dropped": 0})
        flat = raw.data.reshape(t * c, h, w)
        for part in batched(len(windows), TILES_PER_BATCH):
            win = windows[part]
            tiles = cut(flat, win).reshape(len(win), t, c, s, s)
            valid = np.stack([raw.valid[:, r : r + s, col : col + s] for r, col, _, _ in win])  # (k, T, S, S)
            fraction = valid.mean(axis=(2, 3))
            keep = (fraction >= series.min_valid_fraction) & (fraction > 0)
            kept = keep.any(axis=1)
            for i in np.flatnonzero(~kept):
                counters.rejected_tiles.append({
                    "file": entry.file, "window": _window_text(win[i]),
                    "reason": f"no date with at least {series.min_valid_fraction:.0%} valid pixels ({t} dates, the "
                              f"clearest {fraction[i].max():.0%}; ingestion.series.min_valid_fraction)"})
            dropped = int((~keep[kept]).sum())
            counters.tiles_total += len(win)
            extra.dates_dropped += dropped
            extra.tiles_no_valid_date += int((~kept).sum())
            file_counts["tiles"] += int(kept.sum())
            file_counts["rejected_tiles"] += int((~kept).sum())
            file_counts["dates_dropped"] += dropped
            if not kept.any():
                continue
            win = win[kept]
            series_tiles, days, mask, observed = _pack(tiles[kept], valid[kept], raw.day_of_year, keep[kept], max_seq_len)
            maps = cut_maps(raw.label_map, win) if raw.label_map is not None and params.label_source != "none" else None
            file_class = None if entry.class_name is None else class_index[entry.class_name]
            labels = tile_labels(len(win), file_class, maps)
            yield TileBatch(cubes=series_tiles, sample_ids=[f"{entry.file}@{r},{col}" for r, col, _, _ in win],
                            source_file=entry.file, windows=win, labels=labels, label_maps=maps,
                            day_of_year=days, date_mask=mask, valid=observed)
        del raw


def append_series_plan(store: CubeStore, plan: IngestionPlan, params: IngestionParams, series: SeriesParams) -> dict:
    """Create the series store when missing, append the plan's new tiles, return the append record.

    A store of the cube layout is refused (:class:`~.store_schema.StoreSchemaError`) before
    anything is read or written.
    """
    params = series_tiling(params, series)
    if store.exists():
        info = store.info
        if info["sample_layout"] != "series":
            raise layout_mismatch(plan.raw_root, store.path, found=info["sample_layout"], given="series")
        max_seq_len = info["max_seq_len"]
    else:
        if plan.num_bands is None:
            log.error("no file of %s could be ingested (%d rejected)", plan.raw_root, len(plan.rejected))
            return {"appended": 0, "duplicates": 0, "tiles_total": 0, "failed_files": [], "per_file": {}}
        max_seq_len = int(plan.params["max_seq_len"])
        store.create(num_bands=plan.num_bands, tile_size=params.tile_size, band_names=plan.band_names,
                     wavelengths_nm=plan.wavelengths_nm, class_names=plan.class_names, compression=params.compression,
                     sample_layout="series", max_seq_len=max_seq_len)
    counters, extra = AppendCounters(), SeriesCounters()
    plan = _reconcile_with_store(plan, store.info, store.path, params, counters)
    store.set_class_names(plan.class_names)
    started = time.perf_counter()

    def record(summary) -> dict:
        return {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "files": [e.file for e in plan.accepted],
            "appended": summary.appended, "duplicates": summary.duplicates,
            "duplicate_ids": summary.duplicate_ids[:1000], "tiles_total": counters.tiles_total,
            "repaired_tiles": 0, "repaired_values": 0, "rejected_tiles": counters.rejected_tiles,
            "failed_files": counters.failed_files,
            "per_file": {f: {**c, **summary.per_file.get(f, {})} for f, c in counters.per_file.items()},
            "dates_dropped": extra.dates_dropped, "tiles_no_valid_date": extra.tiles_no_valid_date,
            "seconds": round(time.perf_counter() - started, 3),
        }

    store.append(iter_series_batches(plan, params, series, counters, extra, max_seq_len), log_entry=record)
    return store.ingestion_log()[-1]


@dataclass
class PendingSeriesAppend(PendingAppend):
    """The series counterpart of :class:`~.ingest.PendingAppend` (saved by the ``cube_store`` entry)."""

    series: SeriesParams = field(default_factory=SeriesParams)

    def write_into(self, store: CubeStore) -> dict:
        return append_series_plan(store, self.plan, self.params, self.series)


@dataclass
class PendingCubeAppend(PendingAppend):
    """:class:`~.ingest.PendingAppend` that first refuses a store of the series layout, so a folder
    of cubes given the name of a series dataset stops with the layout error, not a list of
    per-file band-count rejections."""

    def write_into(self, store: CubeStore) -> dict:
        if store.exists() and store.sample_layout != "cube":
            raise layout_mismatch(self.plan.raw_root, store.path, found=store.sample_layout, given="cube")
        return super().write_into(store)


# ---- step 3: report ----------------------------------------------------------------------------
def build_series_report(plan: IngestionPlan, record: dict, index: pd.DataFrame, store: CubeStore) -> dict:
    """The cube report (:func:`~.ingest.build_report`) plus dates per file, sorted and repeated
    dates, dates dropped for too little valid area, and tiles left with no date."""
    report = build_report(plan, record, index, store)
    files = plan.params.get("series_files", {})
    for entry in report["ingested"]:
        meta = files.get(entry["file"], {})
        entry.update({key: meta[key] for key in ("dates", "first_date", "last_date", "sorted_dates", "duplicate_dates")
                      if key in meta})
    report["sample_layout"] = "series"
    report["max_seq_len"] = store.info["max_seq_len"] if store.exists() else plan.params.get("max_seq_len")
    report["duplicate_dates"] = [{"file": f, "dates": m["duplicate_dates"]} for f, m in files.items() if m["duplicate_dates"]]
    report["counts"].update(
        files_with_dates_sorted=sum(bool(m["sorted_dates"]) for m in files.values()),
        duplicate_dates=sum(len(m["duplicate_dates"]) for m in files.values()),
        dates_dropped_low_valid=record.get("dates_dropped", 0),
        tiles_rejected_no_valid_date=record.get("tiles_no_valid_date", 0),
    )
    return report


def ingest_series_folder(raw_root: str | Path, store_path: str | Path, params: IngestionParams,
                         series: SeriesParams | None = None) -> tuple[dict, pd.DataFrame]:
    """All three steps in one call (scripts, tests): returns report and index."""
    series = series or SeriesParams()
    store = CubeStore(store_path)
    plan = scan_series_folder(raw_root, params, series)
    record = append_series_plan(store, plan, params, series)
    index = build_sample_index(store, params.splits, params.split_block_px)
    return build_series_report(plan, record, index, store), index
