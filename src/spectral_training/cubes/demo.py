"""The bundled demo dataset: the real AVIRIS Indian Pines scene shipped inside ``tensorly``.

145 x 145 pixels, 200 bands (400-2500 nm), 16 land-cover classes, CC-BY 3.0
(Baumgardner, Biehl, Landgrebe 2015, doi:10.4231/R7RX991C). Written as HDF5 files in the common
channels-last layout (H, W, C) with the per-pixel label map, wavelengths and licence, split into
quadrants so that ingestion has several files to scan.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import h5py
import numpy as np


@dataclass
class DemoScene:
    cube_hwc: np.ndarray  # uint16 (H, W, C): the sensor's integer radiance
    labels: np.ndarray  # uint8 (H, W), 0 = unlabelled
    wavelengths_nm: np.ndarray
    licence: str
    reference: str
    description: str


def load_indian_pines() -> DemoScene:
    """The scene from the ``tensorly`` package (no download: it ships inside the wheel)."""
    from tensorly.datasets import load_indian_pines as _load

    bunch = _load()
    cube = np.asarray(bunch["tensor"])
    if not np.array_equal(cube, np.round(cube)) or cube.min() < 0 or cube.max() > np.iinfo(np.uint16).max:
        raise ValueError("the Indian Pines cube from tensorly is no longer integer radiance; update cubes/demo.py")
    label_map, wavelengths = bunch["ticks"]
    return DemoScene(
        cube_hwc=cube.astype(np.uint16),
        labels=np.asarray(label_map, dtype=np.uint8),
        wavelengths_nm=np.asarray(wavelengths, dtype=np.float64),
        licence=str(bunch["LICENCE"]),
        reference=str(bunch["reference"]),
        description=str(bunch["DESC"]),
    )


def hdf5_file_image(cube_hwc: np.ndarray, labels: np.ndarray, wavelengths_nm: np.ndarray, attrs: dict) -> bytes:
    """An HDF5 file (as bytes) holding ``cube`` (H, W, C), ``labels`` (H, W) and ``wavelengths``.

    Built in memory with no timestamps, so the same scene always gives the same bytes.
    """
    buffer = io.BytesIO()
    with h5py.File(buffer, "w", track_order=True) as f:
        dset = f.create_dataset("cube", data=cube_hwc, track_times=False)
        dset.attrs["layout"] = "HWC"
        dset.attrs["units"] = "radiance (sensor digital numbers)"
        f.create_dataset("labels", data=labels, track_times=False)
        f.create_dataset("wavelengths", data=wavelengths_nm, track_times=False)
        for key, value in attrs.items():
            f.attrs[key] = value
    return buffer.getvalue()


def indian_pines_files(grid: int = 2) -> dict[str, bytes]:
    """The scene split into ``grid`` x ``grid`` spatial parts, as {file name: HDF5 bytes}."""
    scene = load_indian_pines()
    h, w, _ = scene.cube_hwc.shape
    rows = np.array_split(np.arange(h), grid)
    cols = np.array_split(np.arange(w), grid)
    files = {}
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            window = np.s_[r[0] : r[-1] + 1, c[0] : c[-1] + 1]
            files[f"indian_pines_r{i}c{j}.h5"] = hdf5_file_image(
                scene.cube_hwc[window],
                scene.labels[window],
                scene.wavelengths_nm,
                {
                    "title": "AVIRIS Indian Pines (part)",
                    "licence": scene.licence,
                    "reference": scene.reference,
                    "source_window": f"rows {r[0]}:{r[-1] + 1}, cols {c[0]}:{c[-1] + 1} of 145x145",
                    "description": scene.description,
                },
            )
    return files
