"""Finding a cube and its metadata in an HDF5 file: the file opened read-only with an error that
says what is wrong, the one 3-D numeric dataset (or the one ``cube_key`` names), and the
wavelengths, band names and layout stored beside it. Shared by the readers of cubes
(:mod:`.cube_headers`, :mod:`.readers`) and of series (:mod:`.series_readers`); no pixel is read.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np

from .cube_checks import (
    _NUMERIC_KINDS,
    _WAVELENGTH_NAMES,
    _WAVELENGTH_UNIT_NAMES,
    CubeFileError,
    _decode,
    _normalise_layout,
    _short,
    _to_nanometres,
)


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
