"""Project pipelines (`kedro registry list`)."""

from __future__ import annotations

from kedro.pipeline import Pipeline

from spectral_training.pipelines import demo_data, ingestion, normalisation_stats


def register_pipelines() -> dict[str, Pipeline]:
    """Pipelines by name; ``__default__`` prepares a dataset: ingestion and statistics."""
    pipelines = {
        "demo_data": demo_data.create_pipeline(),
        "ingestion": ingestion.create_pipeline(),
        "normalisation_stats": normalisation_stats.create_pipeline(),
    }
    pipelines["data"] = pipelines["ingestion"] + pipelines["normalisation_stats"]
    pipelines["__default__"] = pipelines["data"]
    return pipelines
