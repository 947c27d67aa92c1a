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
values) belong to ingestion, not here. The checks every reader shares (and ``CubeFileError``,
``SUPPORTED_SUFFIXES``, ``detect_band_axis``, still importable from here) are in :mod:`.cube_checks`.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from .photos import PHOTO_SUFFIXES, RGB_BAND_NAMES, RGB_WAVELENGTHS_NM, PhotoError, read_photo
from .cube_checks import (
    _HDF5_SUFFIXES,
    _NUMERIC_KINDS,
    _WAVELENGTH_NAMES,
    _WAVELENGTH_UNIT_NAMES,
    SUPPORTED_SUFFIXES,
    CubeFileError,
    _check_file_is_readable,
    _check_no_zero_axis,
    _check_numeric_dtype,
    _check_per_band,
    _check_photo_size,
    _check_scale,
    _decode,
    _labels_to_int32,
    _normalise_layout,
    _short,
    _to_nanometres,
    detect_band_axis,
)

logger = logging.getLogger(__name__)


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
            that is not a PNG/JPEG, truncated, corrupt or a decompression bomb.
    """
    path = Path(path)
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
    if suffix in PHOTO_SUFFIXES:
        return _read_photo(path, size=photo_size)
    if suffix in _HDF5_SUFFIXES:
        return _read_hdf5(path, cube_key=cube_key, layout=layout, scale=scale, labels_key=labels_key)
    if suffix == ".npy":
        return _read_npy(path, layout=layout, scale=scale)
    return _read_geotiff(path, scale=scale)




def _copy_to_chw_float32(source, source_layout: str) -> np.ndarray:
    """Copy a 3-D array-like (ndarray, memmap, h5py dataset) into a new float32 (C, H, W) array.

    The copy goes in slabs along the source's first axis: each slab is cast (and, for HWC,
    transposed) straight into the result, so no second full-size array is ever made.
    """
    if source_layout == "HWC":
        height, width, bands = source.shape
    else:
        bands, height, width = source.shape
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
# HDF5
# --------------------------------------------------------------------------------------------


def _open_hdf5(path: Path) -> h5py.File:
    """Open read-only, turning h5py's OSError into a CubeFileError that says what is wrong."""
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        detail = _short(exc)
        if "signature not found" in detail:
            reason = "the file is not an HDF5 file (no HDF5 signature found)."
            fix = "check the file was exported as HDF5, or give it the suffix of its real format."
        elif "truncated" in detail:
            reason = (
                "the HDF5 file is truncated: it ends before the size its header records,"
                f" probably an interrupted download or copy ({detail})."
            )
            fix = "copy or download the file again."
        elif "lock" in detail:
            reason = f"the HDF5 file is locked, perhaps still being written by another process ({detail})."
            fix = (
                "wait for the writer to finish; on a file system without locks set the environment"
                " variable HDF5_USE_FILE_LOCKING=FALSE."
            )
        else:
            reason = f"the HDF5 file cannot be opened; it is corrupt ({detail})."
            fix = "copy or export the file again."
        raise CubeFileError(path, reason, fix) from exc


def _describe_dataset(dataset: h5py.Dataset) -> str:
    return f"'{dataset.name}' {dataset.shape} {dataset.dtype}"


def _all_datasets(h5: h5py.File) -> list[h5py.Dataset]:
    found: list[h5py.Dataset] = []

    def collect(_name, obj):
        if isinstance(obj, h5py.Dataset):
            found.append(obj)
        return None  # keep walking

    h5.visititems(collect)
    return found


def _is_3d(dataset: h5py.Dataset) -> bool:
    return dataset.shape is not None and len(dataset.shape) == 3


def _find_cube_dataset(h5: h5py.File, path: Path, cube_key: str | None, labels_key: str) -> h5py.Dataset:
    """The dataset named by `cube_key`, else the one 3-D numeric dataset in the file."""
    datasets = _all_datasets(h5)
    three_d = [d for d in datasets if _is_3d(d)]
    if cube_key is not None:
        obj = h5.get(cube_key)
        if not isinstance(obj, h5py.Dataset):
            existing = ", ".join(_describe_dataset(d) for d in three_d) or "none"
            kind = "is a group, not a dataset" if obj is not None else "does not exist"
            raise CubeFileError(
                path,
                f"`cube_key` {cube_key!r} {kind} in the file; its 3-D datasets are: {existing}.",
                "set `cube_key` to one of the 3-D datasets listed, or leave it unset to pick the"
                " only one.",
            )
        if not _is_3d(obj):
            ndim = 0 if obj.shape is None else len(obj.shape)
            raise CubeFileError(
                path,
                f"the dataset {_describe_dataset(obj)} named by `cube_key` is {ndim}-D; a cube"
                " needs 3 dimensions (bands, height, width).",
                "point `cube_key` at a 3-D dataset; a single-band image must be stored as"
                " (1, H, W) or (H, W, 1).",
            )
        return obj

    labels_name = "/" + labels_key.strip("/") if labels_key else None
    candidates = [d for d in three_d if d.dtype.kind in _NUMERIC_KINDS and d.name != labels_name]
    if len(candidates) == 1:
        return candidates[0]
    if len(candidates) > 1:
        listed = ", ".join(_describe_dataset(d) for d in candidates)
        raise CubeFileError(
            path,
            f"the file holds {len(candidates)} 3-D numeric datasets, so without `cube_key` which"
            f" one is the cube is ambiguous: {listed}.",
            f"set `cube_key` in the dataset's parameters to one of: "
            f"{', '.join(repr(d.name) for d in candidates)}.",
        )
    if three_d:
        listed = ", ".join(_describe_dataset(d) for d in three_d)
        raise CubeFileError(
            path,
            f"the file has no 3-D numeric dataset; its 3-D datasets are not integer or float: {listed}.",
            "store the cube as an integer or float array (e.g. uint16 or float32).",
        )
    if not datasets:
        raise CubeFileError(
            path,
            "the HDF5 file contains no datasets at all, so there is no cube to read.",
            "export the cube into the file as one 3-D dataset (H, W, C) or (C, H, W).",
        )
    dims = sorted({0 if d.shape is None else len(d.shape) for d in datasets})
    listed = ", ".join(_describe_dataset(d) for d in datasets[:10])
    raise CubeFileError(
        path,
        f"the file has only {'/'.join(f'{n}-D' for n in dims)} datasets ({listed}); a cube needs"
        " 3 dimensions (bands, height, width).",
        "store the cube as one 3-D dataset; a single-band image must be stored as (1, H, W) or"
        " (H, W, 1).",
    )


def _unique_holders(*objects):
    """The given HDF5 objects without repeats (a root-level cube's parent is the root)."""
    seen: set[str] = set()
    unique = []
    for obj in objects:
        if obj.name not in seen:
            seen.add(obj.name)
            unique.append(obj)
    return unique


def _first_attribute(holder, names: Sequence[str]) -> str | None:
    for name in names:
        if name in holder.attrs:
            value = holder.attrs[name]
            if isinstance(value, np.ndarray) and value.size == 1:
                value = value.reshape(-1)[0]
            return _decode(value)
    return None


def _find_name(names, wanted: Sequence[str]) -> str | None:
    """The first of `wanted` present in `names`, compared case-insensitively; its stored spelling."""
    by_lower = {name.lower(): name for name in names}
    for name in wanted:
        if name in by_lower:
            return by_lower[name]
    return None


def _hdf5_wavelengths(h5: h5py.File, cube: h5py.Dataset, path: Path) -> list[float] | None:
    """Wavelengths (nm) from a dataset beside the cube or at the root, else from an attribute
    on the cube, its group or the root; names compared case-insensitively; None when absent."""
    for group in _unique_holders(cube.parent, h5):
        name = _find_name(group.keys(), _WAVELENGTH_NAMES)
        obj = group.get(name) if name is not None else None
        if isinstance(obj, h5py.Dataset):
            unit = _first_attribute(obj, _WAVELENGTH_UNIT_NAMES)
            return _to_nanometres(obj[()], unit, path, f"dataset '{obj.name}'")
    for holder in _unique_holders(cube, cube.parent, h5):
        name = _find_name(holder.attrs.keys(), _WAVELENGTH_NAMES)
        if name is not None:
            unit = _first_attribute(holder, ("wavelength_units", "wavelength_unit"))
            return _to_nanometres(holder.attrs[name], unit, path, f"attribute '{name}' of '{holder.name}'")
    return None


def _hdf5_band_names(h5: h5py.File, cube: h5py.Dataset) -> list[str] | None:
    """Band names from a `band_names` attribute on the cube or the file root, else None."""
    for holder in _unique_holders(cube, h5):
        if "band_names" in holder.attrs:
            raw = holder.attrs["band_names"]
            if isinstance(raw, str | bytes | np.bytes_):
                return [part.strip() for part in _decode(raw).split(",")]
            return [_decode(v) for v in np.asarray(raw).reshape(-1)]
    return None


def _hdf5_layout_attribute(cube: h5py.Dataset, path: Path) -> str | None:
    if "layout" not in cube.attrs:
        return None
    where = f"the `layout` attribute of '{cube.name}'"
    layout = _normalise_layout(_decode(cube.attrs["layout"]), path, where=where)
    return None if layout == "auto" else layout


def _hdf5_labels(
    h5: h5py.File, cube: h5py.Dataset, labels_key: str, spatial_shape: tuple[int, int], path: Path
) -> np.ndarray | None:
    """The int32 (H, W) label dataset `labels_key` (from the root, else beside the cube), or None."""
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
    return _labels_to_int32(obj[()], path, f"dataset '{obj.name}'")


def _read_hdf5(
    path: Path, *, cube_key: str | None, layout: str, scale: float | None, labels_key: str
) -> RawCube:
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
            if source_layout == "HWC":
                height, width, n_bands = cube.shape
            else:
                n_bands, height, width = cube.shape
            _check_per_band(wavelengths_nm, n_bands, path, "wavelengths")
            band_names = _hdf5_band_names(h5, cube)
            _check_per_band(band_names, n_bands, path, "band names")
            label_map = _hdf5_labels(h5, cube, labels_key, (height, width), path)
            data = _copy_to_chw_float32(cube, source_layout)
            source_dtype = cube.dtype
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
    _apply_scale(data, source_dtype, scale)
    return RawCube(
        path=path,
        data=data,
        label_map=label_map,
        wavelengths_nm=wavelengths_nm,
        band_names=band_names,
        source_layout=source_layout,
        source_dtype=source_dtype.name,
    )


# --------------------------------------------------------------------------------------------
# NumPy .npy
# --------------------------------------------------------------------------------------------

_NPY_MAGIC = b"\x93NUMPY"


def _read_npy(path: Path, *, layout: str, scale: float | None) -> RawCube:
    with path.open("rb") as handle:
        magic = handle.read(len(_NPY_MAGIC))
    if magic != _NPY_MAGIC:
        raise CubeFileError(
            path,
            "the file is not a NumPy .npy file (no .npy header).",
            "save the cube with numpy.save, or give the file the suffix of its real format.",
        )
    try:
        # mmap: the file's pages are read once, straight into the float32 result.
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
    data = _copy_to_chw_float32(array, source_layout)
    _apply_scale(data, array.dtype, scale)
    return RawCube(
        path=path,
        data=data,
        label_map=None,
        wavelengths_nm=None,
        band_names=None,
        source_layout=source_layout,
        source_dtype=array.dtype.name,
    )


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


def _read_geotiff(path: Path, *, scale: float | None) -> RawCube:
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
                source_dtype = np.result_type(*dtypes)
                data = np.empty((src.count, src.height, src.width), dtype=np.float32)
                for band in range(1, src.count + 1):
                    # One band at a time in its own dtype: nodata is matched exactly before the cast.
                    values = src.read(band)
                    data[band - 1] = values
                    nodata = src.nodatavals[band - 1]
                    if nodata is not None and not math.isnan(nodata):
                        data[band - 1][values == nodata] = np.nan
                descriptions = list(src.descriptions)
                band_names = None
                if any(descriptions):
                    band_names = [d if d else f"band_{i}" for i, d in enumerate(descriptions, start=1)]
                wavelengths_nm = _geotiff_wavelengths(src, path)
    except CubeFileError:
        raise
    except (RasterioError, OSError) as exc:
        raise CubeFileError(
            path,
            f"the GeoTIFF is corrupt or not a TIFF; GDAL cannot read it ({_short(exc)}).",
            "export or download the file again.",
        ) from exc
    if all(dtype.kind in "iu" for dtype in dtypes):
        _apply_scale(data, source_dtype, scale)
    return RawCube(
        path=path,
        data=data,
        label_map=None,
        wavelengths_nm=wavelengths_nm,
        band_names=band_names,
        source_layout="CHW",
        source_dtype=source_dtype.name,
    )


# --------------------------------------------------------------------------------------------
# PNG / JPEG photographs
# --------------------------------------------------------------------------------------------


def _read_photo(path: Path, *, size: int | None) -> RawCube:
    try:
        photo = read_photo(path, size=None if size is None else int(size))
    except PhotoError as exc:
        raise CubeFileError(path, exc.reason, exc.fix) from exc
    return RawCube(
        path=path,
        data=photo.data,
        label_map=None,
        wavelengths_nm=list(RGB_WAVELENGTHS_NM),
        band_names=list(RGB_BAND_NAMES),
        source_layout="HWC",
        source_dtype=photo.source_dtype,
    )
