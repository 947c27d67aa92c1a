"""Node of the demo_data pipeline."""

from __future__ import annotations

from spectral_training.cubes.demo import indian_pines_files


def write_demo_files(demo_params: dict) -> dict[str, bytes]:
    """The Indian Pines scene as HDF5 files {name: bytes}, split into a grid of parts.

    Args:
        demo_params: ``demo_data`` parameters (``grid``).
    Returns:
        File contents for the ``raw_cubes`` folder (written only where missing).
    """
    return indian_pines_files(grid=int(demo_params.get("grid", 2)))
