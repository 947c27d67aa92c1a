"""Node of the mae_evaluation pipeline."""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from spectral_training.cubes.store import CubeStore
from spectral_training.metrics.mae_evaluation import EvaluationParams, evaluate_mae


def evaluate_reconstruction(
    cube_store: CubeStore,
    sample_index: pd.DataFrame,
    band_stats: dict,
    mae_model: dict,
    mae_history: list[dict],
    evaluation_params: dict,
) -> tuple[dict, dict, Figure, Figure, Figure, Figure]:
    """Score the trained MAE on the test split in physical units, beside two baselines.

    Returns:
        ``reconstruction_metrics`` (all figures, checkpoint, data version, bands),
        ``reconstruction_metric_values`` (the headline numbers for MLflow), and the four plots:
        reconstruction grid, error per band, spectra, loss curves.
    """
    metrics, figures = evaluate_mae(cube_store, sample_index, band_stats, mae_model,
                                    EvaluationParams.from_dict(evaluation_params), history=mae_history)
    values = {
        f"{name}/{key}": {"value": value, "step": 0}
        for name, row in metrics["summary"].items()
        for key, value in row.items()
        if value is not None
    }
    return (metrics, values, figures["reconstruction_grid.png"], figures["error_per_band.png"],
            figures["spectra.png"], figures["loss_curves.png"])
