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


def _group(pipe: Pipeline, namespace: str) -> Pipeline:
    """Group nodes under a namespace for `kedro viz` without renaming catalog entries.

    The dataset is chosen at run time (``--params dataset=<name>``) and every catalog path
    already says which dataset an artifact belongs to, so namespaces here group stages (a
    collapsible box per stage in `kedro viz`) rather than prefixing dataset names.
    """
    return Pipeline(pipe, namespace=namespace, prefix_datasets_with_namespace=False)


def register_pipelines() -> dict[str, Pipeline]:
    """Pipelines by name; ``__default__`` is the main job, ``mae_pretrain``."""
    stages = {
        "demo_data": _group(demo_data.create_pipeline(), "demo_data"),
        "ingestion": _group(ingestion.create_pipeline(), "data_preparation"),
        "normalisation_stats": _group(normalisation_stats.create_pipeline(), "data_preparation"),
        "transform_validation": _group(transform_validation.create_pipeline(), "transform_validation"),
        "mae_training": _group(mae_training.create_pipeline(), "mae"),
        "mae_evaluation": _group(mae_evaluation.create_pipeline(), "mae"),
    }
    pipelines = dict(stages)
    pipelines["data"] = stages["ingestion"] + stages["normalisation_stats"]
    pipelines["mae_pretrain"] = (
        pipelines["data"] + stages["transform_validation"] + stages["mae_training"] + stages["mae_evaluation"]
    )
    pipelines["__default__"] = pipelines["mae_pretrain"]
    return pipelines
