"""Project hooks: dataset-name safety and MLflow run bookkeeping."""

from __future__ import annotations

import logging
import os

from kedro.framework.hooks import hook_impl

from spectral_training.cubes.ingest import check_dataset_name

log = logging.getLogger(__name__)


class DatasetNameHooks:
    """Refuse a dataset name that is not a plain folder name before anything is read or written.

    The name is spliced into every catalog path, so '../x' or 'a/b' would escape data/<layer>/.
    """

    @hook_impl
    def after_context_created(self, context) -> None:
        name = context.params.get("dataset")
        check_dataset_name(name)
        log.info("dataset: %s", name)


class MlflowRunHooks:
    """Continue an interrupted training's MLflow run, and record where every run came from.

    kedro-mlflow opens one MLflow run per `kedro run` in its ``before_pipeline_run``; MLflow takes
    the run id from ``MLFLOW_RUN_ID`` when it is set, so setting it earlier (when the context is
    created) makes a resumed training log into the run it started in.
    """

    @hook_impl
    def after_context_created(self, context) -> None:
        from spectral_training.tracking import read_marker

        params = context.params
        if str(params.get("train", {}).get("resume", "auto")).lower() == "false" or "MLFLOW_RUN_ID" in os.environ:
            return
        marker = read_marker(params.get("mae_runs_root", ""))
        if marker and not _mlflow_run_exists(marker["mlflow_run_id"]):
            log.warning("the MLflow run %s of an unfinished training is gone from the tracking store; "
                        "a new MLflow run starts", marker["mlflow_run_id"])
            marker = None
        if marker:
            os.environ["MLFLOW_RUN_ID"] = marker["mlflow_run_id"]
            log.info("continuing MLflow run %s of the unfinished training %s", marker["mlflow_run_id"], marker["run_name"])

    @hook_impl
    def before_pipeline_run(self, run_params, pipeline, catalog) -> None:
        import mlflow

        from spectral_training.tracking import git_commit

        if mlflow.active_run() is None:
            return
        commit = git_commit(run_params.get("project_path") or ".")
        if commit:
            mlflow.set_tag("git_commit", commit)
        mlflow.log_dict(catalog.load("parameters"), "config/resolved_parameters.json")


def _mlflow_run_exists(run_id: str) -> bool:
    from mlflow.tracking import MlflowClient

    try:
        MlflowClient().get_run(run_id)
    except Exception:
        return False
    return True
