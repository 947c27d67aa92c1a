"""Nodes of the demo_data pipeline."""

from __future__ import annotations

from spectral_training.cubes.demo import indian_pines_files
from spectral_training.cubes.demo_series import sits_demo_files


def write_demo_files(demo_params: dict) -> dict[str, bytes]:
    """The Indian Pines scene as HDF5 files {name: bytes}, split into a grid of parts.

    Args:
        demo_params: ``demo_data`` parameters (``grid``).
    Returns:
        File contents for the ``raw_cubes`` folder (written only where missing).
    """
    return indian_pines_files(grid=int(demo_params.get("grid", 2)))


def write_sits_demo_files(demo_params: dict) -> dict[str, bytes]:
    """The synthetic Sentinel-2-like series ``sits_demo`` as HDF5 files {name: bytes} and a README.

    Args:
        demo_params: ``demo_data`` parameters (``sits_demo``: locations, size, fields, min_dates,
            max_dates, seed).
    Returns:
        File contents for ``data/01_raw/sits_demo/`` (written only where missing; the same
        parameters always give the same bytes).
    """
    return sits_demo_files(**dict(demo_params.get("sits_demo") or {}))
