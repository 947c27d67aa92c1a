"""Write tiny, real time-series HDF5 files (good and broken) for tests, as users export them.

Import as ``from series_corpus import ...`` (``tests/cubes`` is on ``sys.path``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np


def write_series(
    path: str | Path,
    dates: Sequence[str] = ("2021-03-01", "2021-06-01", "2021-09-01"),
    bands: int = 3,
    size: int = 8,
    *,
    layout: str = "TCHW",
    qa: np.ndarray | None = None,
    valid: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    seed: int = 0,
    dates_key: str = "dates",
) -> np.ndarray:
    """A float32 series of len(dates) dates at ``path``; returns its values as (T, C, H, W).

    Each date's values are ``100 * (date position + 1)`` plus noise below 1, so a test can tell
    which stored date a value came from.
    """
    t = len(dates)
    rng = np.random.default_rng(seed)
    values = (100.0 * (np.arange(t)[:, None, None, None] + 1) + rng.random((t, bands, size, size))).astype(np.float32)
    with h5py.File(path, "w") as f:
        stored = values if layout == "TCHW" else values.transpose(0, 2, 3, 1)
        f.create_dataset("series", data=stored).attrs["layout"] = layout
        if dates_key == "dates":
            f["dates"] = np.array(list(dates), dtype="S10")
        else:
            f[dates_key] = np.asarray(dates, dtype=np.int32)
        if qa is not None:
            f["qa"] = qa
        if valid is not None:
            f["valid"] = valid.astype(np.uint8)
        if labels is not None:
            f["labels"] = labels
    return values
