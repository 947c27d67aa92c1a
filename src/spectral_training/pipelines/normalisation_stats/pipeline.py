"""normalisation_stats: streaming per-band statistics on the train split."""

from kedro.pipeline import Pipeline, node

from .nodes import compute_train_band_stats


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([
        node(compute_train_band_stats, inputs=["cube_store", "sample_index", "params:normalisation_stats"],
             outputs="band_stats", name="compute_band_stats"),
    ])
