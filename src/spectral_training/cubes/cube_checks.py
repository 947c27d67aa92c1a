"""The rules every raw cube file is checked against, shared by the readers of its header and of
its pixels (:mod:`.cube_headers`, :mod:`.readers`, :mod:`.series_readers`).

:class:`CubeFileError` (file, reason, fix), the checks of the file and of the reading
parameters, the band axis (:func:`detect_band_axis`), dtypes and shapes, and the parsing of
wavelengths and labels. Nothing here reads a file's pixels.
"""

from __future__ import annotations

import logging
import math
import numbers
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .photos import PHOTO_SUFFIXES

logger = logging.getLogger(__name__)

SUPPORTED_SUFFIXES: frozenset[str] = frozenset({".h5", ".hdf5", ".he5", ".npy", ".tif", ".tiff"}) | PHOTO_SUFFIXES

_HDF5_SUFFIXES = frozenset({".h5", ".hdf5", ".he5"})
_GEOTIFF_SUFFIXES = frozenset({".tif", ".tiff"})
_LAYOUTS = ("HWC", "CHW")

# Names under which a file may carry its band centre wavelengths (dataset or attribute).
_WAVELENGTH_NAMES = ("wavelengths", "wavelength", "wavelengths_nm")
# Attribute / tag names that may say which unit those wavelengths are in.
_WAVELENGTH_UNIT_NAMES = ("wavelength_units", "wavelength_unit", "units", "unit")
_NANOMETRE_UNITS = frozenset({"nm", "nanometer", "nanometers", "nanometre", "nanometres"})
_MICROMETRE_UNITS = frozenset(
    {"um", "µm", "μm", "micrometer", "micrometers", "micrometre", "micrometres", "micron", "microns"}
)
# Below this every realistic wavelength in nanometres is impossible (UV starts near 100 nm),
# so a vector whose values are all smaller must be in micrometres.
_MICROMETRE_THRESHOLD = 100.0

_NUMERIC_KINDS = frozenset("iuf")


class CubeFileError(ValueError):
    """A raw file that cannot be ingested.

    ``str(err) == f"{path}: {reason} Fix: {fix}"``; the three parts are kept as attributes so
    that callers (the ingestion report, quarantine) can store them separately.
    """

    def __init__(self, path: str | Path, reason: str, fix: str):
        self.path = str(path)
        self.reason = reason
        self.fix = fix
        super().__init__(f"{self.path}: {reason} Fix: {fix}")

    def __reduce__(self):
        # Rebuild from the three parts, so the error survives pickling (multiprocessing workers).
        return (type(self), (self.path, self.reason, self.fix))



def detect_band_axis(
    shape: tuple[int, int, int],
    *,
    layout: str = "auto",
    n_wavelengths: int | None = None,
    path: str | Path = "<array>",
) -> str:
    """Say whether a 3-D shape is stored bands-last ("HWC") or bands-first ("CHW").

    Rules, first match wins:
      1. ``layout`` "HWC" or "CHW" is returned as given.
      2. ``n_wavelengths`` equal to exactly one of axis 0 / axis 2 makes that axis the bands.
      3. Square images: ``shape[0] == shape[1] != shape[2]`` is HWC (e.g. Indian Pines,
         145x145x200); ``shape[1] == shape[2] != shape[0]`` is CHW.
      4. Exactly one of axis 0 / axis 2 strictly smaller than both other axes is the bands.

    Raises:
        CubeFileError: the shape is not 3-D, ``layout`` is not one of auto/HWC/CHW, or no
            rule decides (the message tells the user to set ``layout``).
    """
    layout = _normalise_layout(layout, path, where="the `layout` parameter")
    if len(shape) != 3:
        raise CubeFileError(
            path,
            f"the array is {len(shape)}-D with shape {tuple(shape)}; a cube needs 3 dimensions.",
            "store the cube as (H, W, C) or (C, H, W).",
        )
    if layout != "auto":
        return layout
    first, middle, last = shape
    if n_wavelengths is not None and (first == n_wavelengths) != (last == n_wavelengths):
        return "CHW" if first == n_wavelengths else "HWC"
    if first == middle != last:
        return "HWC"
    if middle == last != first:
        return "CHW"
    first_is_smallest = first < middle and first < last
    last_is_smallest = last < first and last < middle
    if first_is_smallest != last_is_smallest:
        return "CHW" if first_is_smallest else "HWC"
    raise CubeFileError(
        path,
        f"the band axis is ambiguous for shape {tuple(shape)}: bands-last would mean"
        f" H={first}, W={middle}, C={last}; bands-first would mean C={first}, H={middle}, W={last}.",
        "set `layout: HWC` or `layout: CHW` in the dataset's parameters"
        " (for HDF5 you may instead add a `layout` attribute to the cube dataset).",
    )


# --------------------------------------------------------------------------------------------
# Checks shared by every format
# --------------------------------------------------------------------------------------------


def _normalise_layout(layout: str, path: str | Path, *, where: str) -> str:
    """Return "auto", "HWC" or "CHW" for any spelling case of those, else raise."""
    text = str(layout).strip()
    if text.lower() == "auto":
        return "auto"
    if text.upper() in _LAYOUTS:
        return text.upper()
    raise CubeFileError(
        path,
        f"{where} is {layout!r}; expected 'auto', 'HWC' or 'CHW'.",
        "use `layout: HWC` for bands-last (H, W, C), `layout: CHW` for bands-first (C, H, W),"
        " or `layout: auto`.",
    )


def _check_scale(scale: float | None, path: Path) -> None:
    if scale is None:
        return
    is_number = isinstance(scale, numbers.Real) and not isinstance(scale, bool)
    if not is_number or not math.isfinite(scale) or scale == 0:
        raise CubeFileError(
            path,
            f"the `scale` parameter is {scale!r}; it must be a finite non-zero number.",
            "set `scale` to the factor that turns stored integers into physical values"
            " (e.g. 0.0001), or leave it unset.",
        )


def _check_photo_size(photo_size: int | None, path: Path) -> None:
    if photo_size is None:
        return
    if not isinstance(photo_size, numbers.Integral) or isinstance(photo_size, bool) or photo_size < 1:
        raise CubeFileError(
            path,
            f"the `photo_size` argument is {photo_size!r}; it must be a positive whole number of pixels.",
            "pass the store's tile size (ingestion does), or None to keep photos at native size.",
        )


def _check_request(path: Path, layout: str, scale: float | None, photo_size: int | None) -> tuple[str, str]:
    """What every read checks first, pixels or header: the parameters, the suffix, the file.

    Returns the layout ("auto", "HWC" or "CHW") and the suffix in lower case.
    """
    layout = _normalise_layout(layout, path, where="the `layout` parameter")
    _check_scale(scale, path)
    _check_photo_size(photo_size, path)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise CubeFileError(
            path,
            f"the suffix {path.suffix!r} is not a supported cube format "
            f"(supported: {', '.join(sorted(SUPPORTED_SUFFIXES))}).",
            "convert the file to HDF5, .npy, GeoTIFF, PNG or JPEG, or move it out of the raw"
            " data folder.",
        )
    _check_file_is_readable(path)
    return layout, suffix


def _check_file_is_readable(path: Path) -> None:
    """Raise a CubeFileError when the path is missing, a folder, unreadable or 0 bytes."""
    if not path.exists():
        raise CubeFileError(path, "the file does not exist.", "check the path and the raw data folder.")
    if not path.is_file():
        raise CubeFileError(path, "the path is not a regular file.", "point to a cube file, not a folder.")
    if not os.access(path, os.R_OK):
        raise CubeFileError(
            path,
            "the file is not readable (permission denied).",
            "give the user running the pipeline read access.",
        )
    if path.stat().st_size == 0:
        raise CubeFileError(
            path,
            "the file is empty (0 bytes), probably an interrupted download or copy.",
            "copy or download the file again.",
        )


def _check_numeric_dtype(dtype: np.dtype, path: Path, what: str) -> None:
    """Accept integer and float dtypes; bool, complex, strings, objects and records are refused."""
    if dtype.kind not in _NUMERIC_KINDS:
        raise CubeFileError(
            path,
            f"{what} has dtype {dtype}; a cube must hold integers or floats (not bool, complex,"
            " strings or records).",
            "store the cube as an integer or float array (e.g. uint16 or float32).",
        )


def _check_no_zero_axis(shape: Sequence[int], path: Path, what: str) -> None:
    if 0 in shape:
        raise CubeFileError(
            path,
            f"{what} has a zero-size axis (shape {tuple(shape)}), so it holds no pixels.",
            "re-export the cube with its data, or remove the file from the raw data folder.",
        )


def _short(exc: BaseException) -> str:
    """One-line text of a library exception, for the reason of a CubeFileError.

    rasterio raises "Read failed. See previous exception for details.", keeping GDAL's real
    message on the chained cause, so the cause's text is appended when there is one.
    """
    text = " ".join(str(exc).split()) or type(exc).__name__
    cause = exc.__cause__ or exc.__context__
    if cause is not None and str(cause).strip():
        cause_text = " ".join(str(cause).split())
        text = cause_text if "previous exception" in text else f"{text}: {cause_text}"
    return text


# --------------------------------------------------------------------------------------------
# Wavelengths, band names and labels
# --------------------------------------------------------------------------------------------


def _decode(value) -> str:
    if isinstance(value, bytes | np.bytes_):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _unit_factor(unit: str | None) -> float | None:
    """Nanometres per given unit: 1 for nm, 1000 for micrometres, None when unknown or absent."""
    if unit is None:
        return None
    text = unit.strip().lower()
    if text in _NANOMETRE_UNITS:
        return 1.0
    if text in _MICROMETRE_UNITS:
        return 1000.0
    return None


def _to_nanometres(raw, unit: str | None, path: Path, where: str) -> list[float]:
    """Turn a stored wavelength vector into a list of nanometres.

    An explicit, known unit decides the factor. Without one (or with one we do not know, such
    as ENVI's "Unknown") values all below 100 are taken as micrometres, others as nanometres.
    """
    if isinstance(raw, str | bytes | np.bytes_):
        parts = [p for p in re.split(r"[,\s{}\[\]]+", _decode(raw)) if p]
        try:
            raw = [float(p) for p in parts]
        except ValueError:
            raise CubeFileError(
                path,
                f"the wavelengths in {where} are text that is not a list of numbers ({_decode(raw)[:60]!r}).",
                "store wavelengths as a 1-D numeric array, one value per band.",
            ) from None
    values = np.asarray(raw)
    if values.dtype.kind not in _NUMERIC_KINDS or values.ndim > 1:
        raise CubeFileError(
            path,
            f"the wavelengths in {where} have dtype {values.dtype} and shape {values.shape};"
            " expected a 1-D numeric array.",
            "store wavelengths as a 1-D numeric array, one value per band.",
        )
    values = values.astype(np.float64).reshape(-1)
    if not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise CubeFileError(
            path,
            f"the wavelengths in {where} contain non-finite or non-positive values.",
            "store one positive wavelength per band, in nm or micrometres.",
        )
    factor = _unit_factor(unit)
    if factor is None:
        if unit is not None:
            logger.warning("%s: wavelength unit %r not understood; guessing from the values.", path, unit)
        factor = 1000.0 if values.size and np.all(values < _MICROMETRE_THRESHOLD) else 1.0
    return [float(v) for v in values * factor]


def _check_per_band(values: list | None, n_bands: int, path: Path, what: str) -> None:
    if values is not None and len(values) != n_bands:
        raise CubeFileError(
            path,
            f"the file gives {len(values)} {what} but the cube has {n_bands} bands.",
            f"store exactly one {what.rstrip('s')} per band, or remove them"
            " (if the cube is read with the wrong band axis, set `layout`).",
        )


def _check_labels_dtype(dtype: np.dtype, path: Path, where: str) -> None:
    """Labels are integers, bools or floats (whole numbers, checked on the values)."""
    if dtype.kind not in "fbiu":
        raise CubeFileError(
            path,
            f"the labels in {where} have dtype {dtype}; expected integers.",
            "store labels as integers: 0 for unlabelled, 1..K for classes.",
        )


def _labels_to_int32(raw: np.ndarray, path: Path, where: str) -> np.ndarray:
    """Return labels as int32 (H, W); integer, bool or whole-number float labels, all >= 0."""
    labels = np.asarray(raw)
    _check_labels_dtype(labels.dtype, path, where)
    if labels.dtype.kind == "f" and (not np.all(np.isfinite(labels)) or not np.all(labels == np.round(labels))):
        raise CubeFileError(
            path,
            f"the labels in {where} are floats that are not all whole numbers.",
            "store labels as integers: 0 for unlabelled, 1..K for classes.",
        )
    if labels.size and (labels.min() < 0 or labels.max() > np.iinfo(np.int32).max):
        raise CubeFileError(
            path,
            f"the labels in {where} range from {labels.min()} to {labels.max()}; labels must be"
            " between 0 (unlabelled) and 2**31 - 1.",
            "store labels as 0 for unlabelled and 1..K for classes.",
        )
    return labels.astype(np.int32)
