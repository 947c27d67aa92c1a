"""transform_validation: pre-flight check of transforms and model, before any training."""

from kedro.pipeline import Pipeline, node

from .nodes import validate_mae_transforms


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([
        node(
            validate_mae_transforms,
            inputs=["cube_store", "sample_index", "band_stats", "params:model", "params:transforms",
                    "params:mae_variants", "params:validation"],
            outputs="transform_report",
            name="validate_transforms",
        ),
    ])
