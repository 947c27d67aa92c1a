"""Time-series summaries for evaluation reports (pure NumPy): NDVI from the bands by name or
wavelength, and per-class mean curves over day of year."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Sentinel-2 / Landsat names of the red and near-infrared bands, and their centre wavelengths (nm).
RED_NAMES = ("b4", "b04", "red", "sr_b4", "b4_red")
NIR_NAMES = ("b8", "b08", "nir", "b5_nir", "sr_b5")
RED_NM, NIR_NM, TOLERANCE_NM = 665.0, 842.0, 40.0


def find_band(band_names: Sequence[str] | None, wavelengths_nm: Sequence[float] | None, names: Sequence[str],
              centre_nm: float) -> int | None:
    """The index of the band called one of ``names`` (case-insensitive), else the band whose
    wavelength is nearest ``centre_nm`` within 40 nm, else None."""
    lowered = [str(n).strip().lower() for n in (band_names or [])]
    for name in names:
        if name in lowered:
            return lowered.index(name)
    if wavelengths_nm:
        distance = np.abs(np.asarray(wavelengths_nm, dtype=float) - centre_nm)
        if distance.min() <= TOLERANCE_NM:
            return int(distance.argmin())
    return None


def ndvi_bands(band_names: Sequence[str] | None, wavelengths_nm: Sequence[float] | None) -> tuple[int, int] | None:
    """(red, nir) band indices, or None when either is missing."""
    red = find_band(band_names, wavelengths_nm, RED_NAMES, RED_NM)
    nir = find_band(band_names, wavelengths_nm, NIR_NAMES, NIR_NM)
    return None if red is None or nir is None or red == nir else (red, nir)


def date_means(series: np.ndarray, valid: np.ndarray, bands: tuple[int, int] | None) -> np.ndarray:
    """Per date, the tile's mean NDVI (or mean over bands without ``bands``) over valid pixels.

    series (T, C, H, W) in physical units, valid (T, H, W) bool -> (T,) float64, NaN for a date
    with no valid pixel.
    """
    series = series.astype(np.float64)
    if bands is not None:
        red, nir = series[:, bands[0]], series[:, bands[1]]
        value = (nir - red) / np.where(np.abs(nir + red) < 1e-12, np.nan, nir + red)  # (T, H, W)
    else:
        value = series.mean(axis=1)
    value = np.where(valid, value, np.nan)
    counts = np.isfinite(value).reshape(len(value), -1).sum(1)
    sums = np.nansum(value.reshape(len(value), -1), axis=1)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def class_curves(values: np.ndarray, day_of_year: np.ndarray, date_mask: np.ndarray, labels: np.ndarray,
                 num_classes: int, bins: int = 24) -> dict:
    """Mean of ``values`` per class per day-of-year bin.

    values, day_of_year, date_mask (N, T); labels (N,) class indices (-1 skipped).
    Returns ``{"bin_centres": (bins,), "mean": (K, bins), "std": (K, bins), "count": (K, bins)}``
    (NaN where a class has no observation in a bin).
    """
    edges = np.linspace(1, 367, bins + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    sums = np.zeros((num_classes, bins))
    squares = np.zeros((num_classes, bins))
    counts = np.zeros((num_classes, bins))
    keep = date_mask.astype(bool) & np.isfinite(values) & (labels[:, None] >= 0)
    rows, cols = np.nonzero(keep)
    which = np.clip(np.digitize(day_of_year[rows, cols], edges) - 1, 0, bins - 1)
    np.add.at(sums, (labels[rows], which), values[rows, cols])
    np.add.at(squares, (labels[rows], which), values[rows, cols] ** 2)
    np.add.at(counts, (labels[rows], which), 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = sums / counts
        std = np.sqrt(np.maximum(squares / counts - mean ** 2, 0))
    return {"bin_centres": centres, "mean": mean, "std": std, "count": counts}
