"""Project pipelines (`kedro registry list`)."""

from __future__ import annotations

from kedro.pipeline import Pipeline

from spectral_training.pipelines import (
    demo_data,
    ingestion,
    mae_evaluation,
    mae_training,
    normalisation_stats,
    transform_validation,
)


def register_pipelines() -> dict[str, Pipeline]:
    """Pipelines by name; ``__default__`` is the main job, ``mae_pretrain``."""
    pipelines = {
        "demo_data": demo_data.create_pipeline(),
        "ingestion": ingestion.create_pipeline(),
        "normalisation_stats": normalisation_stats.create_pipeline(),
        "transform_validation": transform_validation.create_pipeline(),
        "mae_training": mae_training.create_pipeline(),
        "mae_evaluation": mae_evaluation.create_pipeline(),
    }
    pipelines["data"] = pipelines["ingestion"] + pipelines["normalisation_stats"]
    pipelines["mae_pretrain"] = (
        pipelines["data"] + pipelines["transform_validation"] + pipelines["mae_training"] + pipelines["mae_evaluation"]
    )
    pipelines["__default__"] = pipelines["mae_pretrain"]
    return pipelines
