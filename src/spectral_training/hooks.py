"""Project hooks: parameter safety and MLflow run bookkeeping."""

from __future__ import annotations

import atexit
import difflib
import logging
import os
from pathlib import Path

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
    resumed training log into the run it started in. The marker that names that run lives in the
    killed run's folder and records its configuration and training data: only the same
    configuration on the same data rejoins it; any other starts a new MLflow run.
    """

    @hook_impl(tryfirst=True)
    def before_pipeline_run(self, run_params, pipeline, catalog) -> None:
        from spectral_training import families
        from spectral_training.families.runs import config_key, family_runs_root, training_data_hash
        from spectral_training.pipelines.family_stage import stage_of
        from spectral_training.tracking import find_marker

        params = catalog.load("parameters")
        stage = stage_of(pipeline)
        family = None if stage is None else stage.family or params.get("family")
        if family is None or "MLFLOW_RUN_ID" in os.environ:
            return
        try:
            resolved = families.resolve(family, params.get(stage.block), *(params.get(d) for d in stage.defaults),
                                        pipeline=stage.pipeline)
        except Exception:  # the pipeline's resolve node reports bad parameters with the full message
            return
        if str(resolved.get("train", {}).get("resume", "auto")).lower() == "false":
            return
        data_hash = training_data_hash(catalog.load("sample_index")) if catalog.exists("sample_index") else None
        runs_root = family_runs_root(params.get("models_root", ""), family)
        marker = find_marker(runs_root, config_key(resolved), data_hash)
        if marker and not _mlflow_run_exists(marker["mlflow_run_id"]):
            log.warning("the MLflow run %s of an unfinished training is gone from the tracking store; "
                        "a new MLflow run starts", marker["mlflow_run_id"])
            marker = None
        if marker and _raw_files_added_since(catalog, runs_root / marker["run_name"]):
            log.info("raw files arrived since the unfinished training %s stopped: this run trains on new data "
                     "and starts its own MLflow run", marker["run_name"])
            marker = None
        if marker:
            os.environ["MLFLOW_RUN_ID"] = marker["mlflow_run_id"]
            log.info("continuing MLflow run %s of the unfinished training %s", marker["mlflow_run_id"],
                     marker["run_name"])

    @hook_impl
    def after_pipeline_run(self, run_params, run_result, pipeline, catalog) -> None:
        os.environ.pop("MLFLOW_RUN_ID", None)  # one kedro run, one MLflow run: a later session starts afresh


def save_version(run_params: dict) -> str | None:
    """The run's save version: the session id, the folder name of every versioned artifact it writes
    (Kedro 1.x passes it to hooks as ``run_id``; ``session_id`` in older releases)."""
    return run_params.get("run_id") or run_params.get("session_id")


def _raw_files_added_since(catalog, run_dir: Path) -> bool:
    """Whether a raw file appeared (inode change time: copies and moves set it too) after the run's marker."""
    from spectral_training.tracking.run_marker import MARKER_NAME

    try:
        since = (run_dir / MARKER_NAME).stat().st_mtime
        raw = Path(catalog.load("raw_cubes"))
    except Exception:
        return False
    return any(path.stat().st_ctime > since for path in raw.rglob("*") if path.is_file())


class MlflowTagHooks:
    """Tag the MLflow run that kedro-mlflow opened (``trylast``: after it) with where it came from:
    the git commit, the resolved parameters, and the training data's hash once the sample index
    is read or written (``data_hash``, as in run folder names and model manifests)."""

    @hook_impl(trylast=True)
    def before_pipeline_run(self, run_params, pipeline, catalog) -> None:
        import mlflow

        from spectral_training.tracking import git_commit

        if mlflow.active_run() is None:
            return
        commit = git_commit(run_params.get("project_path") or ".")
        if commit:
            mlflow.set_tag("git_commit", commit)
        version = save_version(run_params)
        if version:  # the version folder of every versioned artifact of this run
            mlflow.set_tag("kedro_save_version", version)
        mlflow.log_dict(catalog.load("parameters"), "config/resolved_parameters.json")

    @hook_impl
    def after_dataset_loaded(self, dataset_name: str, data) -> None:
        self._tag_data(dataset_name, data)

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data) -> None:
        self._tag_data(dataset_name, data)

    @staticmethod
    def _tag_data(dataset_name: str, data) -> None:
        if dataset_name != "sample_index":
            return
        import mlflow

        from spectral_training.families.runs import training_data_hash

        if mlflow.active_run() is not None:
            mlflow.set_tag("data_hash", training_data_hash(data))


class ProvenanceHooks:
    """Write ``provenance.json`` beside every versioned artifact this run saves: the version (the
    Kedro session id), pipeline, git commit, ``--params``, a hash of the resolved parameters, the
    training data's hash and the MLflow run, so each version is traceable without MLflow too."""

    def __init__(self) -> None:
        self._catalog = None
        self._record: dict = {}

    @hook_impl
    def before_pipeline_run(self, run_params, pipeline, catalog) -> None:
        import hashlib
        import json

        from spectral_training.tracking import git_commit

        params = catalog.load("parameters")
        self._catalog = catalog
        self._record = {
            "version": save_version(run_params),
            "pipeline": ",".join(run_params.get("pipeline_names") or [run_params.get("pipeline_name") or "__default__"]),
            "dataset": params.get("dataset"),
            "git_commit": git_commit(run_params.get("project_path") or "."),
            "runtime_params": run_params.get("runtime_params") or {},
            "env": run_params.get("env"),
            "parameters_sha256": hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest(),
            "data_hash": None,
            "data_version": None,
        }

    @hook_impl
    def after_dataset_loaded(self, dataset_name: str, data) -> None:
        self._note_data(dataset_name, data)

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data) -> None:
        import json

        self._note_data(dataset_name, data)
        dataset = self._catalog.get(dataset_name) if self._catalog is not None else None
        version = getattr(dataset, "_version", None)
        if version is None or not version.save:
            return
        folder = Path(str(dataset._get_versioned_path(version.save))).parent
        if folder.is_dir():
            from spectral_training.tracking import active_run_id

            (folder / "provenance.json").write_text(json.dumps({**self._record, "mlflow_run_id": active_run_id()},
                                                               indent=2, default=str))

    def _note_data(self, dataset_name: str, data) -> None:
        if dataset_name == "sample_index" and self._record:
            from spectral_training.cubes.data_version import dataset_version
            from spectral_training.families.runs import training_data_hash

            self._record["data_hash"] = training_data_hash(data)
            self._record["data_version"] = dataset_version(data)


class DatasetLockHooks:
    """One writing run per dataset: a pipeline that appends to the store or trains takes the
    dataset's lock (``run_lock`` parameter) before anything runs and drops it at the end, on error
    and at process exit; a second such run stops at once naming the holder (runlock.py)."""

    def __init__(self) -> None:
        self._lock = None

    @hook_impl(tryfirst=True)
    def before_pipeline_run(self, run_params, pipeline, catalog) -> None:
        from spectral_training.pipelines.family_stage import stage_of
        from spectral_training.runlock import DatasetLock

        writes = "cube_store" in pipeline.all_outputs() or stage_of(pipeline) is not None
        params = catalog.load("parameters")
        if not writes or not params.get("run_lock"):
            return
        path = Path(params["run_lock"])
        if not path.is_absolute() and run_params.get("project_path"):
            path = Path(run_params["project_path"]) / path
        names = run_params.get("pipeline_names") or [run_params.get("pipeline_name") or "__default__"]
        self._lock = DatasetLock(path, pipeline=",".join(names)).acquire()
        atexit.register(self._release)
        log.info("dataset lock %s taken", path)

    @hook_impl
    def after_pipeline_run(self, run_params, run_result, pipeline, catalog) -> None:
        self._release()

    @hook_impl
    def on_pipeline_error(self, error, run_params, pipeline, catalog) -> None:
        self._release()

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None


def _mlflow_run_exists(run_id: str) -> bool:
    from mlflow.tracking import MlflowClient

    try:
        MlflowClient().get_run(run_id)
    except Exception:
        return False
    return True
