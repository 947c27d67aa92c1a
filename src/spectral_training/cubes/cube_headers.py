"""What a raw cube file says about itself, read without its pixels.

:func:`read_cube_header` returns a :class:`CubeHeader`: the ``(C, H, W)`` shape that
:func:`.readers.read_cube` would return, band names, wavelengths (nm), whether a per-pixel label
map exists, and the layout and dtype as found. It runs every check of ``read_cube`` that needs no
pixel value and fails with the same :class:`CubeFileError`, because ``read_cube`` opens files
through the functions below and checks the same header before it reads a pixel:

- HDF5: the cube dataset's shape, dtype and attributes, the wavelength dataset, the label
  dataset's shape and dtype (:func:`open_hdf5_cube`);
- ``.npy``: the header, the array memory-mapped and no page read (:func:`open_npy_cube`);
- GeoTIFF: what rasterio reads of the header: size, band count, dtypes, descriptions, tags
  (:func:`open_geotiff_cube`);
- photographs: with ``photo_size`` (as ingestion reads them) the result is one tile of
  ``(3, photo_size, photo_size)``, so Pillow reads the header only; without it the photo is
  decoded, because its EXIF orientation decides which side is H.

What only the pixels show is found when they are read: damaged HDF5 chunks or a filter that is
not installed, truncated GeoTIFF strips or photo streams, label values out of range, and every
policy on values (the share of non-finite values is ingestion's).
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from .cube_checks import (
    _HDF5_SUFFIXES,
    _WAVELENGTH_UNIT_NAMES,
    CubeFileError,
    _check_labels_dtype,
    _check_no_zero_axis,
    _check_numeric_dtype,
    _check_per_band,
    _check_request,
    _short,
    _to_nanometres,
    detect_band_axis,
)
from .hdf5_metadata import (
    _find_cube_dataset,
    _hdf5_band_names,
    _hdf5_layout_attribute,
    _hdf5_wavelengths,
    _open_hdf5,
    _unique_holders,
)
from .photos import PHOTO_SUFFIXES, RGB_BAND_NAMES, RGB_WAVELENGTHS_NM, PhotoError, probe_photo, read_photo

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlainPixels:
    """Where a cube lies in its file as plain bytes: C-contiguous ``(C, H, W)`` values of
    ``dtype`` (native byte order) from byte ``offset``, found when the file had ``file_size``
    bytes and was last modified at ``file_mtime_ns``. A reader trusts the offset only while the
    file still has that size and time (:mod:`.plain_reads`); a changed file is read
    through its format again, with every check."""

    offset: int
    dtype: str
    file_size: int
    file_mtime_ns: int


@dataclass
class CubeHeader:
    """A raw cube file's metadata, as :class:`.readers.RawCube` carries it beside the data.

    ``shape`` is the ``(C, H, W)`` of the float32 data ``read_cube`` returns; the other fields
    mean what the ``RawCube`` fields of the same name mean. ``plain_pixels`` says where the
    pixels lie as plain bytes, when they do (an uncompressed, contiguous CHW HDF5 dataset): a
    reader may then read them with one positioned read, without HDF5.
    """

    path: Path
    shape: tuple[int, int, int]
    has_label_map: bool
    wavelengths_nm: list[float] | None
    band_names: list[str] | None
    source_layout: str
    source_dtype: str
    plain_pixels: PlainPixels | None = field(default=None, compare=False)


def read_cube_header(
    path: str | Path,
    *,
    cube_key: str | None = None,
    layout: str = "auto",
    scale: float | None = None,
    labels_key: str = "labels",
    photo_size: int | None = None,
) -> CubeHeader:
    """The :class:`CubeHeader` of one raw cube file, its pixels left unread.

    The arguments are :func:`.readers.read_cube`'s (``scale`` is only checked, as ``read_cube``
    checks it), and so are the results and errors for everything a header holds: a file that
    ``read_cube`` refuses for its metadata is refused here with the same reason and fix.

    Raises:
        CubeFileError: see ``read_cube``; its errors on pixel values or unreadable pixel data
            come only from ``read_cube``.
    """
    path = Path(path)
    layout, suffix = _check_request(path, layout, scale, photo_size)
    if suffix in PHOTO_SUFFIXES:
        try:
            if photo_size is None:  # the EXIF orientation decides H and W: decode
                photo = read_photo(path)
                return photo_header(path, photo.data.shape, photo.source_dtype)
            _, source_dtype = probe_photo(path)
        except PhotoError as exc:
            raise CubeFileError(path, exc.reason, exc.fix) from exc
        return photo_header(path, (3, photo_size, photo_size), source_dtype)
    if suffix in _HDF5_SUFFIXES:
        with open_hdf5_cube(path, cube_key=cube_key, layout=layout, labels_key=labels_key) as (header, _, _):
            return header
    if suffix == ".npy":
        header, _ = open_npy_cube(path, layout=layout)
        return header
    with open_geotiff_cube(path) as (header, _):
        return header


def photo_header(path: Path, shape: tuple[int, ...], source_dtype: str) -> CubeHeader:
    """The header of a photograph read to ``shape``: RGB, nominal wavelengths, no label map."""
    return CubeHeader(path, tuple(shape), False, list(RGB_WAVELENGTHS_NM), list(RGB_BAND_NAMES), "HWC", source_dtype)


def _chw_shape(shape: Sequence[int], source_layout: str) -> tuple[int, int, int]:
    """(C, H, W) of a 3-D shape stored in ``source_layout``."""
    if source_layout == "HWC":
        height, width, bands = shape
        return int(bands), int(height), int(width)
    bands, height, width = shape
    return int(bands), int(height), int(width)


# --------------------------------------------------------------------------------------------
# HDF5
# --------------------------------------------------------------------------------------------


def _hdf5_labels_dataset(
    h5: h5py.File, cube: h5py.Dataset, labels_key: str, spatial_shape: tuple[int, int], path: Path
) -> h5py.Dataset | None:
    """The label dataset `labels_key` (from the root, else beside the cube), or None; its shape
    and dtype checked, its values not read."""
    if not labels_key:
        return None
    obj = None
    for group in _unique_holders(h5, cube.parent):
        obj = group.get(labels_key)
        if obj is not None:
            break
    if obj is None:
        return None
    if not isinstance(obj, h5py.Dataset):
        raise CubeFileError(
            path,
            f"`labels_key` {labels_key!r} names a group, not a dataset.",
            "point `labels_key` at a 2-D (H, W) integer dataset.",
        )
    if obj.shape != spatial_shape:
        raise CubeFileError(
            path,
            f"the labels dataset '{obj.name}' has shape {obj.shape} but the cube's (H, W) is"
            f" {spatial_shape}; labels must give one class per pixel.",
            "store labels as a 2-D (H, W) array matching the cube, or set `layout` if the cube"
            " is read with the wrong band axis.",
        )
    _check_labels_dtype(obj.dtype, path, f"dataset '{obj.name}'")
    return obj


def plain_hdf5_offset(dataset: h5py.Dataset) -> int | None:
    """The file offset of a dataset stored as plain native integer or float bytes (contiguous,
    no filter, not external, allocated), or None for any other storage."""
    if dataset.chunks is not None or dataset.compression is not None or dataset.external:
        return None
    if dataset.dtype.kind not in "iuf" or not dataset.dtype.isnative:
        return None
    offset = dataset.id.get_offset()  # None when never written: HDF5 supplies the fill value
    return None if offset is None else int(offset)


def plain_hdf5_pixels(dataset: h5py.Dataset) -> PlainPixels | None:
    """:class:`PlainPixels` of a CHW cube dataset, or None when its bytes are not plain."""
    offset = plain_hdf5_offset(dataset)
    if offset is None:
        return None
    stat = os.stat(dataset.file.filename)
    return PlainPixels(offset, dataset.dtype.name, int(stat.st_size), int(stat.st_mtime_ns))


@contextmanager
def open_hdf5_cube(
    path: Path, *, cube_key: str | None, layout: str, labels_key: str
) -> Iterator[tuple[CubeHeader, h5py.Dataset, h5py.Dataset | None]]:
    """Open an HDF5 cube file read-only and check its header; yield the header, the cube dataset
    and the label dataset (or None), open until the block ends.

    An error reading the file's contents, here or in the block (damaged chunks, broken links,
    a filter that is not installed), is raised as a :class:`CubeFileError`.
    """
    h5 = _open_hdf5(path)
    try:
        with h5:
            cube = _find_cube_dataset(h5, path, cube_key, labels_key)
            _check_numeric_dtype(cube.dtype, path, f"the cube dataset '{cube.name}'")
            _check_no_zero_axis(cube.shape, path, f"the cube dataset '{cube.name}'")
            wavelengths_nm = _hdf5_wavelengths(h5, cube, path)
            source_layout = layout
            if layout == "auto":
                source_layout = _hdf5_layout_attribute(cube, path) or detect_band_axis(
                    cube.shape,
                    n_wavelengths=len(wavelengths_nm) if wavelengths_nm else None,
                    path=path,
                )
            n_bands, height, width = _chw_shape(cube.shape, source_layout)
            _check_per_band(wavelengths_nm, n_bands, path, "wavelengths")
            band_names = _hdf5_band_names(h5, cube)
            _check_per_band(band_names, n_bands, path, "band names")
            labels = _hdf5_labels_dataset(h5, cube, labels_key, (height, width), path)
            header = CubeHeader(path, (n_bands, height, width), labels is not None, wavelengths_nm, band_names,
                                source_layout, cube.dtype.name,
                                plain_pixels=plain_hdf5_pixels(cube) if source_layout == "CHW" else None)
            yield header, cube, labels
    except CubeFileError:
        raise
    except (OSError, RuntimeError, KeyError, TypeError) as exc:
        # The header opened but the contents did not: damaged chunks, broken links, filters.
        detail = _short(exc)
        if "filter" in detail and ("not registered" in detail or "not available" in detail):
            raise CubeFileError(
                path,
                f"the cube is compressed with an HDF5 filter that is not installed here ({detail}).",
                "install and import the filter plugin (e.g. the `hdf5plugin` package), or"
                " re-export the file with gzip or no compression.",
            ) from exc
        raise CubeFileError(
            path,
            f"the HDF5 contents cannot be read; the file is corrupt ({detail}).",
            "copy or export the file again.",
        ) from exc


# --------------------------------------------------------------------------------------------
# NumPy .npy
# --------------------------------------------------------------------------------------------

_NPY_MAGIC = b"\x93NUMPY"


def open_npy_cube(path: Path, *, layout: str) -> tuple[CubeHeader, np.ndarray]:
    """Check a .npy file's header; return the header and the array memory-mapped, read-only
    (no page of it read yet). Object arrays are never unpickled."""
    with path.open("rb") as handle:
        magic = handle.read(len(_NPY_MAGIC))
    if magic != _NPY_MAGIC:
        raise CubeFileError(
            path,
            "the file is not a NumPy .npy file (no .npy header).",
            "save the cube with numpy.save, or give the file the suffix of its real format.",
        )
    try:
        # mmap: the file's pages are read once, when the pixels are copied out.
        array = np.load(path, allow_pickle=False, mmap_mode="r")
    except ValueError as exc:
        detail = _short(exc)
        if "Python objects" in detail or "pickle" in detail:
            reason = "the .npy file holds Python objects (a pickled object array), which are never loaded."
            fix = "save the cube as a numeric array (e.g. float32 or uint16)."
        elif "mmap length" in detail:
            reason = f"the .npy file is truncated: it is shorter than its header says ({detail})."
            fix = "copy or save the file again."
        else:
            reason = f"the .npy file cannot be read; its header is corrupt ({detail})."
            fix = "save the cube again with numpy.save."
        raise CubeFileError(path, reason, fix) from exc
    except (OSError, EOFError) as exc:
        raise CubeFileError(
            path, f"the .npy file cannot be read; it is corrupt ({_short(exc)}).", "save the cube again."
        ) from exc
    _check_numeric_dtype(array.dtype, path, "the array")
    if array.ndim != 3:
        raise CubeFileError(
            path,
            f"the array is {array.ndim}-D with shape {array.shape}; a cube needs 3 dimensions"
            " (bands, height, width).",
            "save the cube as (H, W, C) or (C, H, W); a single-band image as (1, H, W).",
        )
    _check_no_zero_axis(array.shape, path, "the array")
    source_layout = detect_band_axis(array.shape, layout=layout, path=path)
    header = CubeHeader(path, _chw_shape(array.shape, source_layout), False, None, None, source_layout, array.dtype.name)
    return header, array


# --------------------------------------------------------------------------------------------
# GeoTIFF
# --------------------------------------------------------------------------------------------


def _band_tag(tags: dict[str, str], names: Sequence[str]) -> str | None:
    lowered = {key.lower(): value for key, value in tags.items()}
    for name in names:
        if name in lowered:
            return lowered[name]
    return None


def _geotiff_wavelengths(src, path: Path) -> list[float] | None:
    """Per-band wavelengths (nm) from the band tags `wavelength` (+ unit tag) or GDAL's
    IMAGERY `CENTRAL_WAVELENGTH_UM`; None unless every band has one."""
    values: list[str] = []
    units: list[str | None] = []
    for band in range(1, src.count + 1):
        tags = src.tags(band)
        value = _band_tag(tags, ("wavelength",))
        unit = _band_tag(tags, _WAVELENGTH_UNIT_NAMES)
        if value is None:
            value = _band_tag(src.tags(band, ns="IMAGERY"), ("central_wavelength_um",))
            unit = "um" if value is not None else None
        if value is None:
            if values:
                logger.warning("%s: band %d has no wavelength tag; ignoring all wavelengths.", path, band)
            return None
        values.append(value)
        units.append(unit)
    if len(set(units)) == 1:
        return _to_nanometres(",".join(values), units[0], path, "the band tags")
    # Units differ between bands: each band converts on its own.
    return [
        _to_nanometres(value, unit, path, f"the tags of band {band}")[0]
        for band, (value, unit) in enumerate(zip(values, units, strict=True), start=1)
    ]


@contextmanager
def open_geotiff_cube(path: Path) -> Iterator[tuple[CubeHeader, object]]:
    """Open a GeoTIFF with rasterio and check its header; yield the header and the open dataset
    (raster bands are the cube's bands: the layout is always CHW).

    An error of GDAL, here or in the block (truncated or corrupt strips), is raised as a
    :class:`CubeFileError`.
    """
    # rasterio loads GDAL; imported here so HDF5/npy users do not pay for it.
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioError

    try:
        with warnings.catch_warnings():
            # Plain TIFFs without georeferencing are fine for training.
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                dtypes = [np.dtype(name) if name in np.sctypeDict else None for name in src.dtypes]
                for band, dtype in enumerate(dtypes, start=1):
                    if dtype is None:
                        raise CubeFileError(
                            path,
                            f"band {band} has dtype {src.dtypes[band - 1]}; a cube must hold"
                            " integers or floats.",
                            "export the GeoTIFF with an integer or float data type.",
                        )
                    _check_numeric_dtype(dtype, path, f"band {band}")
                descriptions = list(src.descriptions)
                band_names = None
                if any(descriptions):
                    band_names = [d if d else f"band_{i}" for i, d in enumerate(descriptions, start=1)]
                wavelengths_nm = _geotiff_wavelengths(src, path)
                header = CubeHeader(path, (src.count, src.height, src.width), False, wavelengths_nm, band_names,
                                    "CHW", np.result_type(*dtypes).name)
                yield header, src
    except CubeFileError:
        raise
    except (RasterioError, OSError) as exc:
        raise CubeFileError(
            path,
            f"the GeoTIFF is corrupt or not a TIFF; GDAL cannot read it ({_short(exc)}).",
            "export or download the file again.",
        ) from exc
