"""Project hooks: parameter safety and MLflow run bookkeeping."""

from __future__ import annotations

import difflib
import logging
import os

from kedro.framework.hooks import hook_impl

from spectral_training.cubes.ingest import check_dataset_name
from spectral_training.families.params import FamilyParamsError

log = logging.getLogger(__name__)

# Blocks that were top-level parameters before every family had its own file.
_FAMILY_BLOCKS = ("model", "transforms", "loader", "train", "evaluation")


def pipeline_parameter_keys(pipelines) -> set[str]:
    """Top-level parameter keys that some registered pipeline reads (``params:<key>...``)."""
    keys = set()
    for pipeline in pipelines.values():
        for name in pipeline.inputs():
            if name.startswith("params:"):
                keys.add(name.split(":", 1)[1].split(".")[0])
    return keys


def check_runtime_parameters(runtime_params: dict | None, known: set[str]) -> None:
    """Refuse ``--params`` keys that nothing reads, naming the key and the valid ones.

    Raises:
        FamilyParamsError: e.g. ``model.variant=small`` (the MAE's blocks live under ``mae.`` now).
    """
    unknown = sorted(key for key in (runtime_params or {}) if key not in known)
    if not unknown:
        return
    hints = []
    for key in unknown:
        if key in _FAMILY_BLOCKS:
            hints.append(f"'{key}' (a family's block: write mae.{key}.<...>, or <family>.{key}.<...> for the "
                         f"family given by family=)")
        else:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hints.append(f"'{key}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
    raise FamilyParamsError(f"--params: unknown parameter(s) {', '.join(hints)}; valid top-level keys: "
                            f"{', '.join(sorted(known))}")


class ParameterHooks:
    """Check the run's parameters before anything is read or written.

    The dataset name is spliced into every catalog path, so '../x' or 'a/b' would escape
    data/<layer>/; a misspelt ``--params`` key would otherwise be silently ignored.
    """

    @hook_impl
    def after_context_created(self, context) -> None:
        from kedro.framework.project import pipelines

        from spectral_training import families

        runtime = getattr(context.config_loader, "runtime_params", None) or {}
        check_runtime_parameters(runtime, pipeline_parameter_keys(pipelines) | set(families.family_names()))
        params = context.params
        name = params.get("dataset")
        check_dataset_name(name)
        log.info("dataset: %s", name)


class MlflowRunHooks:
    """Continue an interrupted training's MLflow run, and record where every run came from.

    kedro-mlflow opens one MLflow run per `kedro run` in its ``before_pipeline_run``; MLflow takes
    the run id from ``MLFLOW_RUN_ID`` when it is set, so setting it first (``tryfirst``) makes a
    resumed training log into the run it started in. The marker that names that run belongs to
    one family's run folder (``<models_root>/<family>/unfinished_run.json``).
    """

    @hook_impl(tryfirst=True)
    def before_pipeline_run(self, run_params, pipeline, catalog) -> None:
        from spectral_training.families.runs import family_runs_root
        from spectral_training.pipelines.family_stage import trained_family
        from spectral_training.tracking import read_marker

        params = catalog.load("parameters")
        family = trained_family(pipeline, params)
        if family is None or "MLFLOW_RUN_ID" in os.environ:
            return
        block = params.get(family) or params.get("classifier") or {}
        if str((block.get("train") or {}).get("resume", "auto")).lower() == "false":
            return
        marker = read_marker(family_runs_root(params.get("models_root", ""), family))
        if marker and not _mlflow_run_exists(marker["mlflow_run_id"]):
            log.warning("the MLflow run %s of an unfinished training is gone from the tracking store; "
                        "a new MLflow run starts", marker["mlflow_run_id"])
            marker = None
        if marker:
            os.environ["MLFLOW_RUN_ID"] = marker["mlflow_run_id"]
            log.info("continuing MLflow run %s of the unfinished training %s", marker["mlflow_run_id"],
                     marker["run_name"])

    @hook_impl
    def after_pipeline_run(self, run_params, run_result, pipeline, catalog) -> None:
        os.environ.pop("MLFLOW_RUN_ID", None)  # one kedro run, one MLflow run: a later session starts afresh


class MlflowTagHooks:
    """Tag the MLflow run that kedro-mlflow opened (``trylast``: after it) with where it came from."""

    @hook_impl(trylast=True)
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
