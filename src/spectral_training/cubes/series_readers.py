"""Read one raw time-series file (HDF5) into a float32 ``(T, C, H, W)`` series, or say why not.

The file format (one file per location or scene)::

    series        4-D numeric (T, C, H, W) or (T, H, W, C): one image per date (``layout``
                  parameter, or a ``layout`` attribute "TCHW" / "THWC" / "CHW" / "HWC", or
                  detected from the shape as for cubes); the name is ``series_key``, or the
                  single 4-D numeric dataset in the file
    dates         (T,) acquisition dates as ISO strings ("2021-05-14"), or
    day_of_year   (T,) integers >= 1 instead
    valid         optional (T, H, W): non-zero = the pixel was observed, and/or
    qa            optional (T, H, W) integer quality band, turned into a mask by a value
                  mapping (e.g. Landsat CFmask: 0 clear land, 1 clear water -> valid; 2 shadow,
                  3 snow, 4 cloud, 255 fill -> invalid)
    labels        optional (H, W) per-pixel classes, 0 = unlabelled; its ``class_names``
                  attribute may name every value from 0
    wavelengths / band_names as for cubes

Dates out of order are sorted (and said so); a date given twice keeps its first image and the
repeat is reported. With ISO dates, ``day_of_year`` counts days from 1 January of the first
date's year (1..366 for a one-year series, beyond 366 for a series that runs into the next).
A pixel with a non-finite value on a date is invalid there and its values become 0.

Engine code: no Kedro; every problem is a :class:`~.readers.CubeFileError` naming the file,
what is wrong and what to do. Files are opened read-only.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from .cube_checks import (
    CubeFileError,
    _check_file_is_readable,
    _check_numeric_dtype,
    _check_per_band,
    _decode,
    _short,
    detect_band_axis,
)
from .hdf5_metadata import _all_datasets, _describe_dataset, _hdf5_band_names, _hdf5_wavelengths, _open_hdf5
from .readers import _hdf5_labels

SERIES_SUFFIXES = frozenset({".h5", ".hdf5", ".he5"})
# Landsat Collection 2 CFmask classes (USGS Landsat 8-9 C2 L2 Science Product Guide).
CFMASK_VALID = (0, 1)  # clear land, clear water
CFMASK_INVALID = (2, 3, 4, 255)  # cloud shadow, snow, cloud, fill


@dataclass
class QAMapping:
    """Which values of a quality band mean "observed" (``valid``) and which do not (``invalid``).

    A value in neither list stops the file with its reason: guessing would let clouds through.
    """

    key: str = "qa"
    valid: tuple[int, ...] = CFMASK_VALID
    invalid: tuple[int, ...] = CFMASK_INVALID

    @classmethod
    def from_dict(cls, raw: dict | None) -> "QAMapping | None":
        if raw is None:
            return None
        unknown = set(raw) - {"key", "valid", "invalid"}
        if unknown:
            raise ValueError(f"ingestion.series.qa: unknown key(s) {sorted(unknown)}; known keys are key, valid, invalid")
        mapping = cls(key=str(raw.get("key", "qa")), valid=tuple(int(v) for v in raw.get("valid", CFMASK_VALID)),
                      invalid=tuple(int(v) for v in raw.get("invalid", CFMASK_INVALID)))
        both = set(mapping.valid) & set(mapping.invalid)
        if both:
            raise ValueError(f"ingestion.series.qa: value(s) {sorted(both)} are listed as both valid and invalid")
        return mapping

    def to_mask(self, qa: np.ndarray, path: Path) -> np.ndarray:
        values = np.unique(qa)
        unmapped = sorted(set(values.tolist()) - set(self.valid) - set(self.invalid))
        if unmapped:
            raise CubeFileError(
                path,
                f"the quality band '{self.key}' holds value(s) {unmapped[:10]} that are neither valid "
                f"{list(self.valid)} nor invalid {list(self.invalid)}.",
                "add each value to ingestion.series.qa.valid or ingestion.series.qa.invalid.",
            )
        return np.isin(qa, np.asarray(self.valid))


@dataclass
class RawSeries:
    """One series file in memory: ``data`` float32 (T, C, H, W) sorted by date, ``day_of_year``
    int (T,), ``valid`` bool (T, H, W), ``label_map`` int32 (H, W) or None."""

    path: Path
    data: np.ndarray
    day_of_year: np.ndarray
    valid: np.ndarray
    label_map: np.ndarray | None
    wavelengths_nm: list[float] | None
    band_names: list[str] | None
    class_names: list[str] | None  # names of the label values 0, 1, ... when the file gives them
    dates: list[str] | None  # ISO dates, sorted, when the file gave dates
    sorted_dates: bool = False  # the file's dates were out of order
    duplicate_dates: list[str] = field(default_factory=list)  # repeats dropped (first image kept)
    nonfinite_fraction: float = 0.0  # of all values, before they were marked invalid


def has_series(path: Path, series_key: str | None) -> bool:
    """True when ``path`` is an HDF5 file holding a 4-D numeric dataset (``series_key`` when set).

    Reads the header only; any problem answers False (the scan reports it later).
    """
    if path.suffix.lower() not in SERIES_SUFFIXES:
        return False
    try:
        with h5py.File(path, "r") as f:
            if series_key:
                obj = f.get(series_key)
                return isinstance(obj, h5py.Dataset) and obj.ndim == 4
            return any(d.ndim == 4 and d.dtype.kind in "iuf" for d in _all_datasets(f))
    except Exception:
        return False


def _find_series(f: h5py.File, path: Path, series_key: str | None) -> h5py.Dataset:
    if series_key:
        obj = f.get(series_key)
        if not isinstance(obj, h5py.Dataset) or obj.ndim != 4:
            raise CubeFileError(path, f"`series_key` {series_key!r} is not a 4-D dataset in the file.",
                                "set ingestion.series.series_key to the (T, C, H, W) dataset, or leave it null.")
        return obj
    found = [d for d in _all_datasets(f) if d.ndim == 4 and d.dtype.kind in "iuf"]
    if len(found) == 1:
        return found[0]
    if not found:
        listed = ", ".join(_describe_dataset(d) for d in _all_datasets(f)[:10]) or "none"
        raise CubeFileError(path, f"the file holds no series: no 4-D numeric dataset (its datasets: {listed}).",
                            "store the series as one (T, C, H, W) or (T, H, W, C) dataset, or ingest the file "
                            "as a cube dataset (ingestion.sample_layout: cube).")
    raise CubeFileError(path, f"the file holds {len(found)} 4-D datasets: {', '.join(_describe_dataset(d) for d in found)}.",
                        "set ingestion.series.series_key to the one that is the series.")


def _series_layout(data: h5py.Dataset, layout: str, n_wavelengths: int | None, path: Path) -> str:
    """``CHW`` for (T, C, H, W), ``HWC`` for (T, H, W, C)."""
    if layout in ("HWC", "CHW"):
        return layout
    attribute = data.attrs.get("layout")
    if attribute is not None:
        text = _decode(attribute).upper().removeprefix("T")
        if text in ("HWC", "CHW"):
            return text
    return detect_band_axis(tuple(data.shape[1:]), n_wavelengths=n_wavelengths, path=path)


def parse_dates(raw: np.ndarray, path: Path, key: str) -> tuple[np.ndarray, list[str]]:
    """ISO date strings -> (days from 1 January of the first date's year, 1-based; ISO strings)."""
    try:
        dates = [dt.date.fromisoformat(_decode(v).strip()[:10]) for v in np.asarray(raw).reshape(-1)]
    except ValueError as err:
        raise CubeFileError(path, f"the dates in '{key}' are not ISO dates YYYY-MM-DD ({err}).",
                            f"store '{key}' as strings like '2021-05-14', or give day_of_year integers.") from None
    first_year = dt.date(min(dates).year, 1, 1)
    return np.array([(d - first_year).days + 1 for d in dates], dtype=np.int64), [d.isoformat() for d in dates]


def _dates(f: h5py.File, path: Path, dates_key: str, doy_key: str, t: int) -> tuple[np.ndarray, list[str] | None]:
    if dates_key in f:
        doy, iso = parse_dates(f[dates_key][()], path, dates_key)
    elif doy_key in f:
        raw = np.asarray(f[doy_key][()]).reshape(-1)
        if raw.dtype.kind not in "iuf" or not np.all(np.isfinite(raw)) or np.any(raw != np.round(raw)) or np.any(raw < 1):
            raise CubeFileError(path, f"'{doy_key}' must hold whole days >= 1, got {raw[:8].tolist()}.",
                                f"store '{doy_key}' as integers 1..366 (or ISO dates in '{dates_key}').")
        doy, iso = raw.astype(np.int64), None
    else:
        raise CubeFileError(path, f"the file gives no acquisition dates (neither '{dates_key}' nor '{doy_key}').",
                            f"add a (T,) dataset '{dates_key}' of ISO dates or '{doy_key}' of integers.")
    if len(doy) != t:
        raise CubeFileError(path, f"the file gives {len(doy)} dates for a series of {t} images.",
                            "store exactly one date per image of the series.")
    if doy.max() > np.iinfo(np.int16).max:
        raise CubeFileError(path, f"the series spans {int(doy.max())} days, more than the store keeps (32767).",
                            "split the series into files of fewer years.")
    return doy, iso


def _mask(f: h5py.File, path: Path, key: str, shape: tuple[int, int, int]) -> np.ndarray | None:
    if key not in f:
        return None
    obj = f[key]
    if not isinstance(obj, h5py.Dataset) or obj.shape != shape:
        got = obj.shape if isinstance(obj, h5py.Dataset) else "a group"
        raise CubeFileError(path, f"'{key}' has shape {got}, the series needs (T, H, W) = {shape}.",
                            f"store '{key}' with one value per date and pixel.")
    return obj[()]


def read_series(
    path: str | Path,
    *,
    series_key: str | None = None,
    layout: str = "auto",
    scale: float | None = None,
    dates_key: str = "dates",
    doy_key: str = "day_of_year",
    mask_key: str = "valid",
    qa: QAMapping | None = None,
    labels_key: str = "labels",
) -> RawSeries:
    """Read one series file into a :class:`RawSeries` (see the module docstring for the format).

    Raises:
        CubeFileError: missing, empty, not HDF5, corrupt; no or several 4-D datasets; dates
            missing, unparseable or of another count; a mask, QA band or label map of another
            shape; a QA value the mapping does not know.
    """
    path = Path(path)
    if path.suffix.lower() not in SERIES_SUFFIXES:
        raise CubeFileError(path, f"series are read from HDF5 files only, not '{path.suffix}'.",
                            "write the series as HDF5 (see the README's time series section), or move the file out.")
    _check_file_is_readable(path)
    h5 = _open_hdf5(path)
    try:
        with h5:
            data = _find_series(h5, path, series_key)
            _check_numeric_dtype(data.dtype, path, f"the series dataset '{data.name}'")
            if 0 in data.shape:
                raise CubeFileError(path, f"the series {_describe_dataset(data)} has a zero-size axis.",
                                    "re-export the series with its images.")
            wavelengths = _hdf5_wavelengths(h5, data, path)
            band_axis = _series_layout(data, layout, len(wavelengths) if wavelengths else None, path)
            t = data.shape[0]
            values = data[()]
            if band_axis == "HWC":
                values = values.transpose(0, 3, 1, 2)
            series = np.ascontiguousarray(values, dtype=np.float32)
            c, h, w = series.shape[1:]
            _check_per_band(wavelengths, c, path, "wavelengths")
            band_names = _hdf5_band_names(h5, data)
            _check_per_band(band_names, c, path, "band names")
            doy, iso = _dates(h5, path, dates_key, doy_key, t)
            valid = np.ones((t, h, w), dtype=bool)
            mask = _mask(h5, path, mask_key, (t, h, w))
            if mask is not None:
                valid &= mask != 0
            if qa is not None:
                qa_band = _mask(h5, path, qa.key, (t, h, w))
                if qa_band is not None:
                    valid &= qa.to_mask(qa_band, path)
            label_map = _hdf5_labels(h5, data, labels_key, (h, w), path)
            labels = h5.get(labels_key) if label_map is not None else None
            labels = labels if labels is not None or label_map is None else data.parent.get(labels_key)
            class_names = None
            if labels is not None and "class_names" in labels.attrs:
                class_names = [_decode(v) for v in np.asarray(labels.attrs["class_names"]).reshape(-1)]
            source_dtype = data.dtype
    except CubeFileError:
        raise
    except (OSError, RuntimeError, KeyError, TypeError, ValueError) as exc:
        raise CubeFileError(path, f"the HDF5 contents cannot be read; the file is corrupt ({_short(exc)}).",
                            "copy or export the file again.") from exc
    if scale is not None and source_dtype.kind in "iu":
        series *= np.float32(scale)
    finite = np.isfinite(series)
    nonfinite = float(1.0 - np.count_nonzero(finite) / series.size)
    if nonfinite:
        valid &= finite.all(axis=1)
        series[~finite] = 0.0
    order = np.argsort(doy, kind="stable")
    unsorted = bool(np.any(order != np.arange(t)))
    doy = doy[order]
    keep = np.ones(t, dtype=bool)
    keep[1:] = doy[1:] != doy[:-1]  # a repeated date keeps its first image
    sorted_iso = [iso[i] for i in order] if iso else None
    label = (lambda i: sorted_iso[i]) if sorted_iso else (lambda i: f"day {int(doy[i])}")
    duplicates = [label(i) for i in np.flatnonzero(~keep)]
    index = order[keep]
    return RawSeries(
        path=path, data=series[index], day_of_year=doy[keep], valid=valid[index], label_map=label_map,
        wavelengths_nm=wavelengths, band_names=band_names, class_names=class_names,
        dates=[sorted_iso[i] for i in np.flatnonzero(keep)] if sorted_iso else None,
        sorted_dates=unsorted, duplicate_dates=duplicates, nonfinite_fraction=nonfinite,
    )
