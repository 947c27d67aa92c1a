"""Read one raw image cube file into a float32 ``(C, H, W)`` array, or say exactly why not.

Formats, chosen by file suffix (case-insensitive):

- HDF5 (``.h5``, ``.hdf5``, ``.he5``): the cube is one 3-D numeric dataset; per-pixel labels,
  wavelengths, band names and the storage layout may sit beside it (see :func:`read_cube`).
- NumPy (``.npy``): one 3-D numeric array, memory-mapped, never unpickled.
- GeoTIFF (``.tif``, ``.tiff``): every raster band is one cube band, so the layout is always CHW.
- Photographs (``.png``, ``.jpg``, ``.jpeg``): read by :mod:`.photos` as 3 bands red, green,
  blue in [0, 1], oriented by EXIF, optionally centre-cropped and resized to one square tile.

Every problem with a file is raised as :class:`CubeFileError`, whose message names the file,
what is wrong with it and what to do; no h5py, NumPy, GDAL or Pillow traceback escapes. Files
are only ever opened read-only.

This module is engine code: it knows nothing about Kedro, datasets or tiling. Checks that need
more than one file (same band count across a dataset) or that depend on policy (non-finite
values) belong to ingestion, not here.

A read is the file's header, checked by :mod:`.cube_headers` (which :func:`read_cube_header`
returns alone, without reading a pixel), then its pixels, here. The checks every reader shares
are in :mod:`.cube_checks` (``CubeFileError``, ``SUPPORTED_SUFFIXES`` and ``detect_band_axis``
are still importable from here).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from .cube_checks import _HDF5_SUFFIXES, SUPPORTED_SUFFIXES, CubeFileError, _check_request, _labels_to_int32, detect_band_axis
from .cube_headers import (
    CubeHeader,
    PlainPixels,
    _hdf5_labels_dataset,
    open_geotiff_cube,
    open_hdf5_cube,
    open_npy_cube,
    photo_header,
    plain_hdf5_offset,
    read_cube_header,
)
from .photos import PHOTO_SUFFIXES, PhotoError, read_photo
from .pread import pread_exact

__all__ = ["SUPPORTED_SUFFIXES", "CubeFileError", "CubeHeader", "PlainPixels", "RawCube", "detect_band_axis",
           "read_cube", "read_cube_header"]

# Cubes are copied to float32 in slabs of about this many source bytes, so that the float32
# result is the only full-size array held at any moment.
_SLAB_BYTES = 32 * 2**20


@dataclass
class RawCube:
    """One raw file, read into memory in the project's cube contract.

    ``data`` is float32 ``(C, H, W)`` and C-contiguous; ``label_map`` is int32 ``(H, W)`` with
    0 meaning unlabelled, or None; ``wavelengths_nm`` and ``band_names`` have one entry per band
    or are None; ``source_layout`` ("HWC"/"CHW") and ``source_dtype`` (e.g. "uint16") describe
    the file as found, before conversion.
    """

    path: Path
    data: np.ndarray
    label_map: np.ndarray | None
    wavelengths_nm: list[float] | None
    band_names: list[str] | None
    source_layout: str
    source_dtype: str

    @classmethod
    def from_header(cls, header: CubeHeader, data: np.ndarray, label_map: np.ndarray | None) -> "RawCube":
        return cls(header.path, data, label_map, header.wavelengths_nm, header.band_names, header.source_layout,
                   header.source_dtype)

    @property
    def header(self) -> CubeHeader:
        """The metadata alone, as :func:`read_cube_header` returns it for the same file."""
        return CubeHeader(self.path, tuple(self.data.shape), self.label_map is not None, self.wavelengths_nm,
                          self.band_names, self.source_layout, self.source_dtype)


def read_cube(
    path: str | Path,
    *,
    cube_key: str | None = None,
    layout: str = "auto",
    scale: float | None = None,
    labels_key: str = "labels",
    photo_size: int | None = None,
) -> RawCube:
    """Read one raw cube file into a :class:`RawCube` with float32 ``(C, H, W)`` data.

    Args:
        path: a file whose suffix is in :data:`SUPPORTED_SUFFIXES`.
        cube_key: HDF5 only: path of the cube dataset. By default the single 3-D numeric
            dataset anywhere in the file (the labels dataset excluded) is used.
        layout: "HWC" or "CHW" forces the band axis; "auto" uses the HDF5 dataset's ``layout``
            attribute when present, else :func:`detect_band_axis`. GeoTIFF ignores it: raster
            bands are always the band axis.
        scale: multiplies integer data after the float32 cast (e.g. 0.0001 for reflectance
            stored as uint16). Float data is never scaled.
        labels_key: HDF5 only: name of an optional 2-D ``(H, W)`` per-pixel label dataset,
            looked up from the file root, then beside the cube.
        photo_size: PNG/JPEG only: centre-crop to a square and resize to this many pixels a
            side (ingestion passes its ``tile_size``, so one photo is one tile); None keeps
            the native size. Photos ignore ``layout``, ``scale`` and ``cube_key``: they are
            always RGB in [0, 1], band names red/green/blue at nominal 640/550/465 nm.

    Returns:
        RawCube. Wavelengths are in nanometres: a vector with an explicit unit ("nm", "um",
        "micrometers", ...) is converted by that unit; without a unit, a vector whose values
        are all below 100 is taken as micrometres and multiplied by 1000.

    Raises:
        CubeFileError: the file is missing, unreadable, empty, corrupt, truncated, of an
            unsupported suffix or dtype, not 3-D, has a zero-size axis, an ambiguous layout,
            or metadata (labels, wavelengths, band names) that does not fit the cube; a photo
            that is not a PNG/JPEG, truncated, corrupt or a decompression bomb. Every error that
            needs no pixel value is raised before a pixel is read, exactly as
            :func:`read_cube_header` raises it.
    """
    path = Path(path)
    layout, suffix = _check_request(path, layout, scale, photo_size)
    if suffix in PHOTO_SUFFIXES:
        return _read_photo(path, size=photo_size)
    if suffix in _HDF5_SUFFIXES:
        return _read_hdf5(path, cube_key=cube_key, layout=layout, scale=scale, labels_key=labels_key)
    if suffix == ".npy":
        return _read_npy(path, layout=layout, scale=scale)
    return _read_geotiff(path, scale=scale)


def _plain_hdf5_bytes(dataset: h5py.Dataset) -> np.ndarray | None:
    """A contiguous, unfiltered HDF5 dataset's values read as plain file bytes (``os.preadv``, which
    releases the GIL and holds no h5py lock, so another thread can write HDF5 meanwhile), in the
    stored dtype and shape; None for any other layout (chunked, compressed, external, not allocated)."""
    offset = plain_hdf5_offset(dataset)
    if offset is None:
        return None
    values = np.empty(dataset.shape, dtype=dataset.dtype)
    fd = os.open(dataset.file.filename, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        pread_exact(fd, memoryview(values.reshape(-1).view(np.uint8)), offset, f"dataset {dataset.name}")
    except OSError:
        return None  # shorter than HDF5 says: let h5py read (and report) it
    finally:
        os.close(fd)
    return values


def _copy_to_chw_float32(source, source_layout: str) -> np.ndarray:
    """Copy a 3-D array-like (ndarray, memmap, h5py dataset) into a new float32 (C, H, W) array.

    The copy goes in slabs along the source's first axis: each slab is cast (and, for HWC,
    transposed) straight into the result, so no second full-size array is ever made.
    """
    if source_layout == "HWC":
        height, width, bands = source.shape
    else:
        bands, height, width = source.shape
    if source_layout == "CHW" and isinstance(source, h5py.Dataset) and source.dtype.itemsize <= 4:
        plain = _plain_hdf5_bytes(source)  # at most the result's size: no bigger second array
        if plain is not None:
            return plain if plain.dtype == np.float32 else plain.astype(np.float32)
    out = np.empty((bands, height, width), dtype=np.float32)
    if source_layout == "CHW" and isinstance(source, h5py.Dataset):
        # HDF5 casts to float32 while reading into `out`: no slab, no intermediate copy.
        source.read_direct(out)
        return out
    first_axis = source.shape[0]
    bytes_per_index = max(1, math.prod(source.shape[1:]) * source.dtype.itemsize)
    step = max(1, _SLAB_BYTES // bytes_per_index)
    chunks = getattr(source, "chunks", None)
    if chunks:
        # Whole HDF5 chunks per slab, so no chunk is decompressed twice.
        step = max(chunks[0], step // chunks[0] * chunks[0])
    for start in range(0, first_axis, step):
        stop = min(start + step, first_axis)
        slab = source[start:stop]
        if source_layout == "HWC":
            out[:, start:stop, :] = slab.transpose(2, 0, 1)  # (rows, W, C) -> (C, rows, W)
        else:
            out[start:stop] = slab
    return out


def _apply_scale(data: np.ndarray, source_dtype: np.dtype, scale: float | None) -> None:
    """Multiply integer-sourced data by `scale`, in place."""
    if scale is not None and source_dtype.kind in "iu":
        data *= np.float32(scale)


# --------------------------------------------------------------------------------------------
# Pixels, per format (the headers are checked first, by :mod:`.cube_headers`)
# --------------------------------------------------------------------------------------------


def _hdf5_labels(
    h5: h5py.File, cube: h5py.Dataset, labels_key: str, spatial_shape: tuple[int, int], path: Path
) -> np.ndarray | None:
    """The int32 (H, W) label dataset `labels_key` (from the root, else beside the cube), or None."""
    labels = _hdf5_labels_dataset(h5, cube, labels_key, spatial_shape, path)
    return None if labels is None else _labels_to_int32(labels[()], path, f"dataset '{labels.name}'")


def _read_hdf5(path: Path, *, cube_key: str | None, layout: str, scale: float | None, labels_key: str) -> RawCube:
    with open_hdf5_cube(path, cube_key=cube_key, layout=layout, labels_key=labels_key) as (header, cube, labels):
        label_map = None if labels is None else _labels_to_int32(labels[()], path, f"dataset '{labels.name}'")
        data = _copy_to_chw_float32(cube, header.source_layout)
    _apply_scale(data, np.dtype(header.source_dtype), scale)
    return RawCube.from_header(header, data, label_map)


def _read_npy(path: Path, *, layout: str, scale: float | None) -> RawCube:
    header, array = open_npy_cube(path, layout=layout)
    data = _copy_to_chw_float32(array, header.source_layout)  # mmap: the pages are read once, into `data`
    _apply_scale(data, np.dtype(header.source_dtype), scale)
    return RawCube.from_header(header, data, None)


def _read_geotiff(path: Path, *, scale: float | None) -> RawCube:
    with open_geotiff_cube(path) as (header, src):
        data = np.empty(header.shape, dtype=np.float32)
        for band in range(1, src.count + 1):
            # One band at a time in its own dtype: nodata is matched exactly before the cast.
            values = src.read(band)
            data[band - 1] = values
            nodata = src.nodatavals[band - 1]
            if nodata is not None and not math.isnan(nodata):
                data[band - 1][values == nodata] = np.nan
    # Only all-integer files are scaled: their common dtype is an integer (or, for int64 with
    # uint64, float64, which is not scaled either way).
    _apply_scale(data, np.dtype(header.source_dtype), scale)
    return RawCube.from_header(header, data, None)


def _read_photo(path: Path, *, size: int | None) -> RawCube:
    try:
        photo = read_photo(path, size=None if size is None else int(size))
    except PhotoError as exc:
        raise CubeFileError(path, exc.reason, exc.fix) from exc
    return RawCube.from_header(photo_header(path, photo.data.shape, photo.source_dtype), photo.data, None)
