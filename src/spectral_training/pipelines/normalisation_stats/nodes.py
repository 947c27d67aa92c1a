"""Node of the normalisation_stats pipeline."""

from __future__ import annotations

import pandas as pd

from spectral_training.cubes.stats import compute_band_stats
from spectral_training.cubes.store import CubeStore


def compute_train_band_stats(cube_store: CubeStore, sample_index: pd.DataFrame, stats_params: dict) -> dict:
    """Per-band mean, std, min, max, count and percentiles over the train split, in one pass.

    Args:
        cube_store: the dataset's store.
        sample_index: the sample index (its ``split`` column picks the train samples).
        stats_params: ``normalisation_stats`` parameters.
    Returns:
        The band statistics (JSON-serialisable).
    """
    train = sample_index.loc[sample_index["split"] == "train", "store_index"].to_numpy()
    return compute_band_stats(
        cube_store,
        train,
        block_size=int(stats_params.get("block_size", 8)),
        percentile_budget=int(stats_params.get("percentile_budget", 20000)),
        seed=int(stats_params.get("seed", 0)),
        show_progress=bool(stats_params.get("show_progress", True)),
    )
