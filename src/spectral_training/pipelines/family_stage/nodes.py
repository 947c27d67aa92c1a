"""Nodes shared by every family's stage: resolve parameters, validate, train, evaluate.

Each node reads its inputs, calls the family (found by name in the registry) or the shared
runner, and returns outputs; what differs between families lives in ``families/``.
"""

from __future__ import annotations

import logging

import pandas as pd
from matplotlib.figure import Figure

from spectral_training import families
from spectral_training.cubes.data_version import dataset_version
from spectral_training.cubes.store import CubeStore
from spectral_training.families.checks import validate_family
from spectral_training.families.runs import config_key, family_runs_root, run_id, train_family, training_data_hash
from spectral_training.tracking import MlflowTrainingCallback
from spectral_training.training.preflight import require_passed

log = logging.getLogger(__name__)


def resolve_family_params(family: str, family_block: dict | None, *defaults: dict, pipeline: str) -> dict:
    """The family's parameter block merged over the defaults (``training_defaults``, then e.g.
    ``classifier_defaults``), every key checked.

    Returns:
        ``{"family": <name>, "model": ..., "transforms": ..., "loader": ..., "train": ..., "evaluation": ...}``
        plus the family's own blocks.
    """
    return families.resolve(family, family_block, *defaults, pipeline=pipeline)


def validate_transforms(cube_store: CubeStore, sample_index: pd.DataFrame, band_stats: dict, family_params: dict,
                        validation_params: dict) -> dict:
    """Check the family's transforms and model against the store before any training step.

    Returns:
        The transform report: each check with ``passed`` and a ``detail`` naming the parameters
        involved, and ``passed`` overall.
    """
    family = families.get_family(family_params["family"])
    return validate_family(family, cube_store, sample_index, band_stats, family_params, validation_params)


def train_model(
    cube_store: CubeStore,
    sample_index: pd.DataFrame,
    band_stats: dict,
    transform_report: dict,
    family_params: dict,
    models_root: str,
    dataset: str,
    skip_validation: bool,
) -> tuple[dict, list[dict]]:
    """Train the family's model on the train split, validating on the val split.

    Refuses to start when transform validation failed (unless ``skip_validation``). A SIGTERM or
    SIGINT writes a checkpoint and ends the run; the same command resumes it. Metrics go to the
    active MLflow run, if any.

    Returns:
        The model manifest (checkpoint paths, build arguments, band list) and the history (one
        entry per epoch).
    """
    require_passed(transform_report, skip_validation, dataset)
    family = families.get_family(family_params["family"])
    setup = family.prepare(cube_store, sample_index, band_stats, family_params)
    data_hash = training_data_hash(sample_index)  # the data is part of the run's identity
    name = run_id(family.name, setup, family_params, data_hash)
    tracker = MlflowTrainingCallback(family_runs_root(models_root, family.name), name,
                                     tags={"dataset": dataset, "family": family.name,
                                           "data_version": dataset_version(sample_index), "data_hash": data_hash},
                                     config_key=config_key(family_params), data_hash=data_hash)
    run = train_family(family, setup, family_params, models_root, run_name=name, data_hash=data_hash,
                       callbacks=[tracker])
    if run.result.stopped_reason == "signal":
        log.warning("training interrupted by a signal; checkpoint written to %s. Run the same command to resume.",
                    run.result.last_checkpoint)
        raise SystemExit(run.result.exit_code)
    return run.manifest, run.result.history


def evaluate_model(cube_store: CubeStore, sample_index: pd.DataFrame, band_stats: dict, model_manifest: dict,
                   history: list[dict], family_params: dict) -> tuple:
    """Score the trained model on the test split with the family's metrics and plots.

    Returns:
        The metrics report, the headline numbers for MLflow, then the family's figures in the
        order of its ``plot_names``.
    """
    family = families.get_family(family_params["family"])
    metrics, values, figures = family.evaluate(cube_store, sample_index, band_stats, model_manifest, family_params,
                                               history)
    mlflow_values = {name: {"value": float(value), "step": 0} for name, value in values.items() if value is not None}
    plots: list[Figure] = [figures[name] for name in family.plot_names]
    return (metrics, mlflow_values, *plots)
