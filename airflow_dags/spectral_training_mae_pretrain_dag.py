from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from airflow.sdk import dag, task

from kedro.framework.session import KedroSession
from kedro.framework.project import configure_project

# Kedro settings required to run your pipeline
env = "local"
pipeline_name = "mae_pretrain"
project_path = Path.cwd()
package_name = "spectral_training"
conf_source = "" or Path.cwd() / "conf"


def _run_kedro_node(node_names=None, namespaces=None):
    """Run a Kedro pipeline slice. Pass node_names for regular node groups or namespaces for namespace groups."""
    configure_project(package_name)
    with KedroSession.create(project_path=project_path, env=env, conf_source=conf_source) as session:
        if namespaces is not None:
            session.run(pipeline_names=[pipeline_name], namespaces=namespaces)
        else:
            session.run(pipeline_names=[pipeline_name], node_names=node_names)


@dag(
    dag_id="spectral-training",
    start_date=datetime(2026,1,1),
    max_active_runs=1,
    schedule="0 3 * * *",
    catchup=False,
    default_args=dict(
        owner="spectral_training",
        depends_on_past=False,
        email_on_failure=False,
        email_on_retry=False,
        retries=0,
        retry_delay=timedelta(minutes=5)
    ),
)
def spectral_training():

    @task(task_id="data-preparation-scan-raw-files")
    def data_preparation_scan_raw_files():
        _run_kedro_node(node_names=["data_preparation.scan_raw_files"])

    @task(task_id="transform-validation-resolve-mae-params-transform-validation-validate-transforms-mae-train-mae-mae-evaluate-reconstruction")
    def transform_validation_resolve_mae_params_transform_validation_validate_transforms_mae_train_mae_mae_evaluate_reconstruction():
        _run_kedro_node(node_names=["transform_validation.resolve_mae_params", "transform_validation.validate_transforms", "mae.train_mae", "mae.evaluate_reconstruction"])

    @task(task_id="data-preparation-append-tiles")
    def data_preparation_append_tiles():
        _run_kedro_node(node_names=["data_preparation.append_tiles"])

    @task(task_id="data-preparation-index-and-report")
    def data_preparation_index_and_report():
        _run_kedro_node(node_names=["data_preparation.index_and_report"])

    @task(task_id="data-preparation-compute-band-stats")
    def data_preparation_compute_band_stats():
        _run_kedro_node(node_names=["data_preparation.compute_band_stats"])

    tasks = {
        "data-preparation-scan-raw-files": data_preparation_scan_raw_files(),
        "transform-validation-resolve-mae-params-transform-validation-validate-transforms-mae-train-mae-mae-evaluate-reconstruction": transform_validation_resolve_mae_params_transform_validation_validate_transforms_mae_train_mae_mae_evaluate_reconstruction(),
        "data-preparation-append-tiles": data_preparation_append_tiles(),
        "data-preparation-index-and-report": data_preparation_index_and_report(),
        "data-preparation-compute-band-stats": data_preparation_compute_band_stats(),
    }
    tasks["data-preparation-append-tiles"] >> tasks["transform-validation-resolve-mae-params-transform-validation-validate-transforms-mae-train-mae-mae-evaluate-reconstruction"]
    tasks["data-preparation-index-and-report"] >> tasks["transform-validation-resolve-mae-params-transform-validation-validate-transforms-mae-train-mae-mae-evaluate-reconstruction"]
    tasks["data-preparation-compute-band-stats"] >> tasks["transform-validation-resolve-mae-params-transform-validation-validate-transforms-mae-train-mae-mae-evaluate-reconstruction"]
    tasks["data-preparation-scan-raw-files"] >> tasks["data-preparation-append-tiles"]
    tasks["data-preparation-scan-raw-files"] >> tasks["data-preparation-index-and-report"]
    tasks["data-preparation-append-tiles"] >> tasks["data-preparation-index-and-report"]
    tasks["data-preparation-append-tiles"] >> tasks["data-preparation-compute-band-stats"]
    tasks["data-preparation-index-and-report"] >> tasks["data-preparation-compute-band-stats"]


spectral_training()