"""mae_evaluation: reconstruction metrics and plots of the trained MAE on the test split."""

from kedro.pipeline import Pipeline, node

from .nodes import evaluate_reconstruction


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([
        node(
            evaluate_reconstruction,
            inputs=["cube_store", "sample_index", "band_stats", "mae_model", "mae_history", "params:evaluation"],
            outputs=["reconstruction_metrics", "reconstruction_metric_values", "reconstruction_grid_plot",
                     "error_per_band_plot", "spectra_plot", "loss_curves_plot"],
            name="evaluate_reconstruction",
        ),
    ])
