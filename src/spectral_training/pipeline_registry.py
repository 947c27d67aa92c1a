"""Project pipelines (`kedro registry list`)."""

from __future__ import annotations

from kedro.pipeline import Pipeline

from spectral_training.pipelines import demo_data, family_stage, ingestion, normalisation_stats
from spectral_training.pipelines import tune as tune_stage


def _group(pipe: Pipeline, namespace: str) -> Pipeline:
    """Group nodes under a namespace for `kedro viz` without renaming catalog entries.

    The dataset is chosen at run time (``--params dataset=<name>``) and every catalog path
    already says which dataset an artifact belongs to, so namespaces here group stages (a
    collapsible box per stage in `kedro viz`) rather than prefixing dataset names.
    """
    return Pipeline(pipe, namespace=namespace, prefix_datasets_with_namespace=False)


def _only(pipe: Pipeline, namespace: str) -> Pipeline:
    return pipe.only_nodes_with_namespaces([namespace])


def register_pipelines() -> dict[str, Pipeline]:
    """Pipelines by name; ``__default__`` is the main job, ``mae_pretrain``.

    Every family stage (``mae_pretrain``, ``classify``, ``finetune``) is the data pipeline plus
    one template (`pipelines/family_stage`): resolve parameters -> validate -> train -> evaluate.
    """
    data = _group(ingestion.create_pipeline(), "data_preparation") + _group(
        normalisation_stats.create_pipeline(), "data_preparation")
    mae = family_stage.create_pipeline(family_stage.MAE)
    classify = family_stage.create_pipeline(family_stage.CLASSIFY)
    finetune = family_stage.create_pipeline(family_stage.FINETUNE)
    pipelines = {
        "demo_data": _group(demo_data.create_pipeline(), "demo_data"),
        "ingestion": _group(ingestion.create_pipeline(), "data_preparation"),
        "normalisation_stats": _group(normalisation_stats.create_pipeline(), "data_preparation"),
        "data": data,
        # The MAE stage's parts, for reruns of one part on existing artifacts.
        "transform_validation": _only(mae, "transform_validation"),
        "mae_training": _only(mae, "transform_validation").only_nodes_with_outputs("mae_family_params")
        + _only(mae, "mae").only_nodes_with_outputs("mae_model", "mae_history"),
        "mae_evaluation": _only(mae, "transform_validation").only_nodes_with_outputs("mae_family_params")
        + _only(mae, "mae").only_nodes_with_outputs("reconstruction_metrics"),
        "mae_pretrain": data + mae,
        "classify": data + classify,
        "finetune": data + finetune,
        "unet_mim": data + family_stage.create_pipeline(family_stage.UNET_MIM),
        "unet_seg": data + family_stage.create_pipeline(family_stage.UNET_SEG),
        "unet_temporal": data + family_stage.create_pipeline(family_stage.UNET_TEMPORAL),  # --params dataset=sits_demo
        # SITS-Former on a series dataset (--params dataset=sits_demo): pretraining, then classification.
        "sits_pretrain": data + family_stage.create_pipeline(family_stage.SITS_PRETRAIN),
        "sits": data + family_stage.create_pipeline(family_stage.SITS),
    }
    pipelines["__default__"] = pipelines["mae_pretrain"]
    # An Optuna study over the family given by --params family=<name> (its own namespace in kedro viz).
    pipelines["tune"] = data + _group(tune_stage.create_pipeline(), "tune")
    return pipelines
