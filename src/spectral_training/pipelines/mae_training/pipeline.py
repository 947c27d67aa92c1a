"""mae_training: spectral MAE pretraining on the dataset's store."""

from kedro.pipeline import Pipeline, node

from .nodes import train_mae


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([
        node(
            train_mae,
            inputs=["cube_store", "sample_index", "band_stats", "transform_report", "params:model",
                    "params:transforms", "params:loader", "params:train", "params:mae_variants",
                    "params:mae_runs_root", "params:dataset", "params:skip_validation"],
            outputs=["mae_model", "mae_history"],
            name="train_mae",
        ),
    ])
