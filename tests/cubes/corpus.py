"""Write tiny, real raw-cube files (good and broken) into a folder, for tests.

Like torchgeo's ``tests/data/*/data.py``: every file here is a genuine HDF5, .npy or GeoTIFF
written by the same libraries users export with, so readers are tested against real bytes.
Tests call these functions with pytest's ``tmp_path``; nothing is checked in.

Only numpy, h5py and rasterio are needed. Import as ``from corpus import ...`` with
``tests/cubes`` on ``sys.path`` (``tests/cubes/conftest.py`` puts it there).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import h5py
import numpy as np

# (C, H, W) of every corpus cube unless a test asks otherwise. Square images, so both layouts
# are detected automatically (H == W != C).
DEFAULT_SHAPE: tuple[int, int, int] = (4, 8, 8)

# Broken-corpus files that `read_cube` accepts; ingestion must reject them later
# (all values non-finite; a band count that differs from the rest of the dataset).
READABLE_BY_READER: frozenset[str] = frozenset({"all_nan.h5", "wrong_bands.h5"})


class CorpusCube(NamedTuple):
    """A file the corpus wrote, and what a correct reader must return for it."""

    path: Path
    data: np.ndarray  # float32 (C, H, W): the stored values cast to float32, NaN at nodata, unscaled
    labels: np.ndarray | None  # int32 (H, W), 0 = unlabelled, or None when none were written


def make_values(shape: tuple[int, int, int], dtype: str | np.dtype = "float32", seed: int = 0) -> np.ndarray:
    """Deterministic (C, H, W) values of `dtype`: integers in [1, 4000) (never 0, the usual
    nodata) or floats in [0, 1)."""
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        high = min(int(np.iinfo(dtype).max), 4000)
        return rng.integers(1, high, size=shape).astype(dtype)
    return rng.random(size=shape).astype(dtype)


def _to_layout(chw: np.ndarray, layout: str) -> np.ndarray:
    """(C, H, W) -> the array as stored: unchanged for CHW, (H, W, C) for HWC."""
    if layout == "CHW":
        return chw
    if layout == "HWC":
        return np.ascontiguousarray(chw.transpose(1, 2, 0))
    raise ValueError(f"layout must be 'HWC' or 'CHW', not {layout!r}")


def write_hdf5_cube(
    path: str | Path,
    shape: tuple[int, int, int] = DEFAULT_SHAPE,
    layout: str = "HWC",
    dtype: str | np.dtype = "float32",
    with_labels: bool = False,
    wavelengths: Sequence[float] | None = None,
    *,
    cube_key: str = "cube",
    wavelengths_as: str = "dataset",
    wavelength_units: str | None = None,
    layout_attribute: bool = False,
    band_names: Sequence[str] | None = None,
    chunks: tuple[int, int, int] | None = None,
    n_classes: int = 3,
    seed: int = 0,
) -> CorpusCube:
    """Write an HDF5 cube of logical shape (C, H, W), stored in `layout`, at `path`.

    `cube_key` may contain groups ("scene/radiance"). `wavelengths` are stored as given (any
    unit) as a root dataset "wavelengths" or, with ``wavelengths_as="attribute"``, as a
    "wavelengths" attribute on the cube; `wavelength_units` adds a "units" attribute
    (dataset) or "wavelength_units" attribute (cube). `layout_attribute` writes the layout as
    a "layout" attribute on the cube. Labels are uint8 (H, W) in 0..n_classes at "labels".
    """
    path = Path(path)
    chw = make_values(shape, dtype, seed)
    labels = None
    with h5py.File(path, "w") as h5:
        cube = h5.create_dataset(cube_key, data=_to_layout(chw, layout), chunks=chunks)
        if layout_attribute:
            cube.attrs["layout"] = layout
        if band_names is not None:
            cube.attrs["band_names"] = list(band_names)
        if wavelengths is not None:
            if wavelengths_as == "dataset":
                stored = h5.create_dataset("wavelengths", data=np.asarray(wavelengths, dtype=np.float64))
                if wavelength_units is not None:
                    stored.attrs["units"] = wavelength_units
            elif wavelengths_as == "attribute":
                cube.attrs["wavelengths"] = np.asarray(wavelengths, dtype=np.float64)
                if wavelength_units is not None:
                    cube.attrs["wavelength_units"] = wavelength_units
            else:
                raise ValueError(f"wavelengths_as must be 'dataset' or 'attribute', not {wavelengths_as!r}")
        if with_labels:
            rng = np.random.default_rng(seed + 1)
            stored_labels = rng.integers(0, n_classes + 1, size=shape[1:]).astype(np.uint8)
            h5.create_dataset("labels", data=stored_labels)
            labels = stored_labels.astype(np.int32)
    return CorpusCube(path, chw.astype(np.float32), labels)


def write_npy_cube(
    path: str | Path,
    shape: tuple[int, int, int] = DEFAULT_SHAPE,
    layout: str = "CHW",
    dtype: str | np.dtype = "float32",
    seed: int = 0,
) -> CorpusCube:
    """Write a .npy cube of logical shape (C, H, W), stored in `layout`, at `path`."""
    path = Path(path)
    chw = make_values(shape, dtype, seed)
    np.save(path, _to_layout(chw, layout))
    return CorpusCube(path, chw.astype(np.float32), None)


def write_geotiff_cube(
    path: str | Path,
    shape: tuple[int, int, int] = DEFAULT_SHAPE,
    dtype: str = "uint16",
    nodata: float | None = 0,
    band_names: Sequence[str] | None = None,
    wavelengths: Sequence[float] | None = None,
    wavelength_units: str | None = None,
    seed: int = 0,
) -> CorpusCube:
    """Write a multi-band GeoTIFF of shape (C, H, W) at `path`.

    With `nodata` set, pixel (0, 0) of every band holds the nodata value (NaN in the expected
    data). `band_names` become band descriptions; `wavelengths` (and `wavelength_units`)
    become the per-band tags "wavelength" / "wavelength_units".
    """
    import rasterio
    from rasterio.transform import Affine

    path = Path(path)
    bands, height, width = shape
    chw = make_values(shape, dtype, seed)
    expected = chw.astype(np.float32)
    if nodata is not None:
        chw[:, 0, 0] = nodata
        expected[:, 0, 0] = np.nan
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": bands,
        "dtype": dtype,
        "nodata": nodata,
        # 30 m pixels, north-up; a real transform keeps GDAL from warning about georeferencing.
        "transform": Affine(30.0, 0.0, 500000.0, 0.0, -30.0, 4000000.0),
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(chw)
        for band in range(1, bands + 1):
            if band_names is not None:
                dst.set_band_description(band, band_names[band - 1])
            if wavelengths is not None:
                tags = {"wavelength": str(wavelengths[band - 1])}
                if wavelength_units is not None:
                    tags["wavelength_units"] = wavelength_units
                dst.update_tags(band, **tags)
    return CorpusCube(path, expected, None)


def _truncate_to_half(path: Path) -> None:
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])


def write_broken_files(folder: str | Path, shape: tuple[int, int, int] = DEFAULT_SHAPE) -> dict[str, str]:
    """Write one file per kind of breakage into `folder`.

    Returns {file name: substring expected in the CubeFileError message}. The files in
    READABLE_BY_READER read fine; their substring is the reason ingestion must give instead
    ("non-finite" for an all-NaN cube, "band" for a band count other than shape[0]).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    bands, height, width = shape
    expected: dict[str, str] = {}

    # An interrupted copy: the HDF5 header records more bytes than the file has.
    truncated = folder / "truncated.h5"
    write_hdf5_cube(truncated, shape)
    _truncate_to_half(truncated)
    expected["truncated.h5"] = "truncated"

    (folder / "not_hdf5.h5").write_text("band,value\n1,0.5\nthis is a CSV export, not HDF5\n")
    expected["not_hdf5.h5"] = "not an HDF5 file"

    (folder / "empty.h5").write_bytes(b"")
    expected["empty.h5"] = "empty"

    with h5py.File(folder / "two_d.h5", "w") as h5:
        h5.create_dataset("image", data=make_values((height, width), "float32"))
    expected["two_d.h5"] = "2-D"

    with h5py.File(folder / "zero_size.h5", "w") as h5:
        h5.create_dataset("cube", shape=(height, width, 0), dtype="float32")
    expected["zero_size.h5"] = "zero-size"

    with h5py.File(folder / "all_nan.h5", "w") as h5:
        h5.create_dataset("cube", data=np.full((height, width, bands), np.nan, dtype=np.float32))
    expected["all_nan.h5"] = "non-finite"

    write_hdf5_cube(folder / "wrong_bands.h5", (bands + 1, height, width))
    expected["wrong_bands.h5"] = "band"

    # Neither rule decides: no square pair, and axis 1 (not 0 or 2) is the smallest.
    np.save(folder / "ambiguous.npy", make_values((20, 10, 30), "float32"))
    expected["ambiguous.npy"] = "ambiguous"

    corrupt_tif = folder / "corrupt.tif"
    write_geotiff_cube(corrupt_tif, shape)
    _truncate_to_half(corrupt_tif)  # the header survives, the pixel strips do not: reading fails
    expected["corrupt.tif"] = "corrupt"

    np.save(folder / "four_d.npy", make_values((2, bands, height, width), "float32"))
    expected["four_d.npy"] = "4-D"

    np.save(folder / "object.npy", np.array([{"band": 1}], dtype=object), allow_pickle=True)
    expected["object.npy"] = "Python objects"

    truncated_npy = folder / "truncated.npy"
    np.save(truncated_npy, make_values(shape, "float32"))
    _truncate_to_half(truncated_npy)
    expected["truncated.npy"] = "truncated"

    with h5py.File(folder / "bool_cube.h5", "w") as h5:
        h5.create_dataset("cube", data=np.ones((height, width, bands), dtype=bool))
    expected["bool_cube.h5"] = "bool"

    with h5py.File(folder / "two_cubes.h5", "w") as h5:
        h5.create_dataset("radiance", data=make_values((height, width, bands), "float32"))
        h5.create_dataset("reflectance", data=make_values((height, width, bands), "float32", seed=1))
    expected["two_cubes.h5"] = "cube_key"

    with h5py.File(folder / "labels_mismatch.h5", "w") as h5:
        h5.create_dataset("cube", data=make_values((height, width, bands), "float32"))
        h5.create_dataset("labels", data=np.zeros((height + 1, width), dtype=np.uint8))
    expected["labels_mismatch.h5"] = "labels"

    return expected


def write_class_folders(raw: Path, classes: Sequence[str] = ("field", "forest", "water"), per_class: int = 4) -> None:
    """Class sub-folders of 6-band 32 px .npy cubes in which each class brightens its own band."""
    rng = np.random.default_rng(0)
    for k, name in enumerate(classes):
        (raw / name).mkdir()
        for i in range(per_class):
            cube = rng.normal(1.0, 0.3, size=(6, 32, 32)).astype("f4")
            cube[k] += 1.5
            np.save(raw / name / f"{name}_{i}.npy", cube)
