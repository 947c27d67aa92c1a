"""Node of the mae_training pipeline."""

from __future__ import annotations

import logging

import pandas as pd

from spectral_training.cubes.store import CubeStore
from spectral_training.metrics.mae_evaluation import dataset_version
from spectral_training.tracking import MlflowTrainingCallback
from spectral_training.training.mae_recipe import prepare_mae, pretrain_mae, run_id
from spectral_training.training.preflight import require_passed

log = logging.getLogger(__name__)


def train_mae(
    cube_store: CubeStore,
    sample_index: pd.DataFrame,
    band_stats: dict,
    transform_report: dict,
    model_params: dict,
    transform_params: dict,
    loader_params: dict,
    train_params: dict,
    mae_variants: dict,
    runs_root: str,
    dataset: str,
    skip_validation: bool,
) -> tuple[dict, list[dict]]:
    """Pretrain the spectral MAE on the train split, validating on the val split.

    Refuses to start when transform validation failed (unless ``skip_validation``). A SIGTERM or
    SIGINT writes a checkpoint and ends the run; the same command resumes it. Metrics go to the
    active MLflow run, if any.

    Returns:
        ``mae_model`` (manifest: checkpoint paths, build arguments, band list) and ``mae_history``
        (one entry per epoch).
    """
    require_passed(transform_report, skip_validation, dataset)
    setup = prepare_mae(cube_store, sample_index, band_stats, model_params, transform_params, mae_variants)
    name = run_id(setup.model_kwargs, transform_params, train_params, loader_params)
    tracker = MlflowTrainingCallback(runs_root, name, tags={"dataset": dataset, "data_version": dataset_version(sample_index)})
    result, manifest = pretrain_mae(setup, train_params, loader_params, runs_root, run_name=name,
                                    transform_params=transform_params, callbacks=[tracker])
    if result.stopped_reason == "signal":
        log.warning("training interrupted by a signal; checkpoint written to %s. Run the same command to resume.",
                    result.last_checkpoint)
        raise SystemExit(result.exit_code)
    return manifest, result.history
