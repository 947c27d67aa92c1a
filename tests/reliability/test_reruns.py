"""Scheduled reruns (families/runs.py, io/versioned.py, hooks.py, runlock.py) through real `kedro run`s.

One tiny project copy (a git repository, so runs can be traced to a commit) is run three times:
  1. `mae_pretrain` on two raw files;
  2. a third raw file added, a stale lock of a dead process left on the dataset: the same command;
  3. nothing changed, an unfinished MLflow run of *another* configuration on the same data left
     behind: the same command again.
The tests share these runs (module fixture) and each checks one promise. Beside the first run, in
a second copy, a `kedro run` on a dataset whose lock this test process holds checks the refusal,
and beside the second, `kedro airflow create` regenerates the DAG: both only cost Kedro's start-up,
on the second core that the sequential runs leave idle. `on_new_data: fresh` vs `continue` is checked in process.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from corpus import write_hdf5_cube
from project_copy import PROJECT_ROOT, make_kedro_project

from spectral_training.io import all_versions
from spectral_training.runlock import DatasetLock

pytestmark = pytest.mark.e2e

WAVELENGTHS = [450, 500, 550, 600, 650, 700]
EPOCHS, BATCH = 2, 4
TINY = (
    "dataset=tiny,ingestion.tile_size=16,ingestion.stride=8,ingestion.show_progress=false,"
    "normalisation_stats.show_progress=false,mae.model.image_size=16,mae.model.spatial_patch=4,mae.model.spectral_patch=3,"
    "mae.model.depth=1,mae.model.embed_dim=16,mae.model.num_heads=2,mae.model.decoder_embed_dim=16,mae.model.decoder_depth=1,"
    f"mae.model.decoder_num_heads=2,mae.train.epochs={EPOCHS},mae.train.warmup_epochs=1,mae.train.progress=false,"
    f"mae.loader.batch_size={BATCH},validation.steps=2,mae.evaluation.max_batches=1"
)
VERSIONED = ("data/03_primary/tiny/band_stats.json", "data/06_models/tiny/mae_model.json",
             "data/08_reporting/tiny/reconstruction_metrics.json", "data/08_reporting/tiny/ingestion_report.json")
OTHER_CONFIG_KEY = "0123456789"  # an unfinished training of some other configuration
DAG_FILE = PROJECT_ROOT / "airflow_dags" / "spectral_training_mae_pretrain_dag.py"
REGENERATE_DAG = ("airflow", "create", "--pipelines", "mae_pretrain", "--group-by", "memory")  # `make airflow-dag`


def _text(run: subprocess.CompletedProcess) -> str:
    """stdout + stderr with the console's line wrapping undone."""
    return " ".join((run.stdout + run.stderr).split())


def _start_kedro(project, log_name: str, *args: str) -> subprocess.Popen:
    """A `kedro` command started in the background, its output in ``<project>/<log_name>``."""
    with open(project.path(log_name), "w") as log:
        return subprocess.Popen([str(Path(sys.executable).with_name("kedro")), *args], cwd=project.root, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, "COLUMNS": "200", "MPLBACKEND": "Agg"})


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def _git_repository(root: Path) -> str:
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
    subprocess.run([*git, "init", "-q"], cwd=root, check=True)
    subprocess.run([*git, "add", "conf", "pyproject.toml"], cwd=root, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "project"], cwd=root, check=True)
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()


def _manifest(project, version: Path) -> dict:
    return json.loads((version / "mae_model.json").read_text())


@pytest.fixture(scope="module")
def reruns(tmp_path_factory):
    from mlflow.tracking import MlflowClient

    project = make_kedro_project(tmp_path_factory.mktemp("reruns") / "project")
    commit = _git_repository(project.root)
    raw = project.raw("tiny")
    for i in range(2):
        write_hdf5_cube(raw / f"scene{i}.h5", (6, 32, 32), wavelengths=WAVELENGTHS, seed=i)

    # Another run while the dataset is held: a second project (its own MLflow store), the same dataset name.
    other = make_kedro_project(project.root.parent / "held")
    other.raw("tiny")
    lock = DatasetLock(other.path("data/02_intermediate/tiny/run.lock"), pipeline="nightly mae_pretrain").acquire()
    holder = json.loads(lock.path.read_text())
    refused = _start_kedro(other, "refused.log", "run", "--pipeline", "mae_pretrain", "--params", TINY)

    first = project.kedro("run", "--pipeline", "mae_pretrain", "--params", TINY)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    try:
        refused.wait(timeout=300)
    finally:
        refused.kill()
        lock.release()
    snapshot = {path: {v: v.read_bytes() for v in all_versions(project.path(path))} for path in VERSIONED}
    index_before = pd.read_parquet(project.path("data/02_intermediate/tiny/sample_index.parquet"))

    write_hdf5_cube(raw / "scene2.h5", (6, 32, 32), wavelengths=WAVELENGTHS, seed=2)  # a new file arrives
    lock = project.path("data/02_intermediate/tiny/run.lock")  # as a run killed with kill -9 leaves it
    dead = _dead_pid()
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": dead, "pipeline": "mae_pretrain",
                                "started": "2026-01-01T03:00:00+0000"}))
    # The Airflow DAG regenerated beside the second run (tests/test_airflow_dag.py checks the committed one).
    dags = other.path("regenerated_dags")
    regenerate = _start_kedro(other, "regenerate.log", *REGENERATE_DAG, "--target-dir", str(dags))
    second = project.kedro("run", "--pipeline", "mae_pretrain", "--params", TINY)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    index_after = pd.read_parquet(project.path("data/02_intermediate/tiny/sample_index.parquet"))

    # A training of another configuration on the same data, killed: its marker and its MLflow run stay.
    client = MlflowClient(tracking_uri=f"sqlite:///{project.path('mlflow.db')}")
    [experiment] = [e for e in client.search_experiments() if e.name == "spectral_training"]
    killed = client.create_run(experiment.experiment_id).info.run_id
    data_hash = _manifest(project, all_versions(project.path("data/06_models/tiny/mae_model.json"))[-1].parent)["data_hash"]
    from spectral_training.tracking import write_marker

    other_run = f"tiny-{OTHER_CONFIG_KEY}-d{data_hash}"
    write_marker(project.path("data/06_models/tiny/mae"), killed, other_run, config_key=OTHER_CONFIG_KEY,
                 data_hash=data_hash)
    third = project.kedro("run", "--pipeline", "mae_pretrain", "--params", TINY)
    assert third.returncode == 0, third.stdout[-3000:] + third.stderr[-3000:]

    assert regenerate.wait(timeout=300) == 0, other.path("regenerate.log").read_text()[-3000:]
    versions = [v.parent for v in all_versions(project.path("data/06_models/tiny/mae_model.json"))]
    return dict(project=project, commit=commit, outputs=(first, second, third), snapshot=snapshot,
                index_before=index_before, index_after=index_after, dead_pid=dead, versions=versions,
                manifests=[_manifest(project, v) for v in versions], client=client, experiment=experiment,
                killed_mlflow_run=killed, other_run=other_run,
                refused=dict(project=other, returncode=refused.returncode, holder=holder,
                             output=" ".join(other.path("refused.log").read_text().split())),
                regenerated_dag=dags / DAG_FILE.name)


def _mlflow_run(reruns, version: Path):
    """The MLflow run a `kedro run` opened, found by the save version of its artifacts."""
    runs = reruns["client"].search_runs([reruns["experiment"].experiment_id],
                                        filter_string=f"tags.kedro_save_version = '{version.name}'")
    assert len(runs) == 1, [r.info.run_id for r in runs]
    return runs[0]


def test_a_rerun_keeps_every_version_of_the_versioned_outputs(reruns):
    """Promise: a rerun never overwrites: stats, model manifest, metrics and reports keep one version per
    run, the older ones byte-identical, and the newest is what a plain load gives."""
    project = reruns["project"]
    for path in VERSIONED:
        versions = all_versions(project.path(path))
        assert len(versions) == 3, (path, versions)  # one per kedro run
        [(old, content)] = reruns["snapshot"][path].items()
        assert versions[0] == old and old.read_bytes() == content, path
        assert project.artifact(path) == versions[-1]
    assert [v.name for v in reruns["versions"]] == sorted(v.name for v in reruns["versions"])


def test_a_rerun_on_a_new_file_keeps_the_old_samples_in_their_splits(reruns):
    """Promise: ingesting a new file adds its samples and moves no old sample to another split."""
    before, after = reruns["index_before"], reruns["index_after"]
    merged = before.merge(after, on="sample_id", how="left", suffixes=("_before", "_after"))
    assert merged["split_after"].notna().all()
    assert (merged["split_before"] == merged["split_after"]).all()
    assert (merged["content_hash_before"] == merged["content_hash_after"]).all()
    new = after[~after["sample_id"].isin(before["sample_id"])]
    assert len(new) == 9 and new["source_file"].astype(str).str.endswith("scene2.h5").all()


def test_a_rerun_on_a_new_file_trains_on_the_new_samples_continuing_the_last_run(reruns):
    """Promise: grown data is a new run (new data hash, new folder) that trains on every sample, old and
    new, starting from the same configuration's last run (`train.on_new_data: continue`, the default)."""
    from spectral_training.families.runs import training_data_hash

    first, second, _ = reruns["manifests"]
    assert first["trained_this_run"] and second["trained_this_run"]
    assert first["data_hash"] == training_data_hash(reruns["index_before"])
    assert second["data_hash"] == training_data_hash(reruns["index_after"]) != first["data_hash"]
    assert second["run_name"] != first["run_name"]
    assert second["run_name"].split("-d")[0] == first["run_name"].split("-d")[0]  # same configuration
    assert first["continued_from"] is None and second["continued_from"] == first["run_name"]
    for manifest, index in ((first, reruns["index_before"]), (second, reruns["index_after"])):
        train = int((index.split == "train").sum())
        assert manifest["steps"] == EPOCHS * (train // BATCH), (manifest["steps"], train)  # last partial batch dropped
    assert (reruns["index_after"].split == "train").sum() > (reruns["index_before"].split == "train").sum()
    lineage = json.loads((reruns["project"].path(second["run_dir"]) / "lineage.json").read_text())
    assert lineage == {"data_hash": second["data_hash"], "continued_from": first["run_name"]}


def test_an_unchanged_rerun_is_a_no_op_that_says_so(reruns):
    """Promise: the same command on the same data appends nothing, trains nothing, and says so."""
    _, second, third = reruns["manifests"]
    output = _text(reruns["outputs"][2])
    assert "unchanged:" in output and "nothing to train" in output
    assert not third["trained_this_run"]
    assert (third["run_name"], third["steps"], third["data_hash"]) == (second["run_name"], second["steps"],
                                                                      second["data_hash"])
    report = json.loads((reruns["project"].path("data/08_reporting/tiny/ingestion_report.json")
                         .joinpath(reruns["versions"][2].name, "ingestion_report.json")).read_text())
    assert report["counts"]["tiles_appended"] == 0 and report["counts"]["duplicates"] == 27


def test_every_version_traces_to_its_data_hash_parameters_and_git_commit(reruns):
    """Promise: each version of the artifacts carries (provenance.json beside it, and tags of its MLflow
    run) the training data's hash, the parameters and the git commit; the version is the MLflow tag
    `kedro_save_version`."""
    project = reruns["project"]
    for version, manifest in zip(reruns["versions"], reruns["manifests"], strict=True):
        provenance = json.loads((version / "provenance.json").read_text())
        assert provenance["version"] == version.name and provenance["git_commit"] == reruns["commit"]
        assert provenance["data_hash"] == manifest["data_hash"] and provenance["parameters_sha256"]
        assert provenance["runtime_params"]["mae"]["train"]["epochs"] == EPOCHS
        mlflow_run = _mlflow_run(reruns, version)
        tags = mlflow_run.data.tags
        assert tags["git_commit"] == reruns["commit"] and tags["data_hash"] == manifest["data_hash"]
        assert provenance["mlflow_run_id"] == mlflow_run.info.run_id
        assert mlflow_run.data.params["mae.train.epochs"] == str(EPOCHS)
    stats = json.loads((all_versions(project.path("data/03_primary/tiny/band_stats.json"))[1].parent
                        / "provenance.json").read_text())
    assert stats["version"] == reruns["versions"][1].name and stats["data_hash"] == reruns["manifests"][1]["data_hash"]


def test_an_unfinished_mlflow_run_of_another_configuration_is_not_joined(reruns):
    """Promise: the MLflow resume marker belongs to one run configuration: with another configuration's
    unfinished run (same data) on disk, a run starts its own MLflow run and leaves that marker alone."""
    third = _mlflow_run(reruns, reruns["versions"][2])
    assert third.info.run_id != reruns["killed_mlflow_run"]
    killed = reruns["client"].get_run(reruns["killed_mlflow_run"])
    assert "kedro_save_version" not in killed.data.tags and not killed.data.metrics
    marker = reruns["project"].path("data/06_models/tiny/mae", reruns["other_run"], "unfinished_run.json")
    assert json.loads(marker.read_text())["mlflow_run_id"] == reruns["killed_mlflow_run"]


def test_a_stale_lock_of_a_dead_run_is_taken_over_with_a_warning(reruns):
    """Promise: a lock file left by a dead process on this host does not block the next scheduled run: it
    is taken over, with a warning naming the dead holder; the lock is gone when the run ends."""
    output = _text(reruns["outputs"][1])
    assert "taking over the stale lock" in output and f"pid {reruns['dead_pid']}" in output
    assert not reruns["project"].path("data/02_intermediate/tiny/run.lock").exists()


def test_a_second_run_on_a_locked_dataset_exits_non_zero_naming_the_holder(reruns):
    """Promise: while a run holds the dataset, another `kedro run` on it stops at once, non-zero, naming
    the holder's host, pid and start time; it ingests and trains nothing."""
    refused, holder = reruns["refused"], reruns["refused"]["holder"]
    output = refused["output"]
    assert refused["returncode"] != 0
    assert "another run holds the lock" in output and f"pid {os.getpid()}" in output
    assert socket.gethostname() in output and holder["started"] in output and "nightly mae_pretrain" in output
    data = refused["project"].path("data")
    assert [p.relative_to(data).as_posix() for p in data.rglob("*") if p.is_file()] == []


def test_the_committed_airflow_dag_is_what_kedro_airflow_create_writes_now(reruns):
    """Promise: the committed DAG (airflow_dags/) is current: `kedro airflow create` (kedro-airflow, with
    conf/base/airflow.yml) run now writes the same file."""
    assert reruns["regenerated_dag"].read_text() == DAG_FILE.read_text(), (
        f"{DAG_FILE.relative_to(PROJECT_ROOT)} is stale: regenerate it with `make airflow-dag`")


# -------------------------------------------------------------------- on_new_data, in process
def _train(models_root: Path, data_hash: str, on_new_data: str) -> dict:
    """The tiny MAE (tests/reliability/mae_problem.py) trained through `train_family`; returns the
    manifest and the last weights."""
    import mae_problem

    from spectral_training.families import get_family
    from spectral_training.families.base import FamilySetup

    family = get_family("mae")
    kwargs = dict(variant="tiny", num_bands=4, image_size=4, spatial_patch=2, spectral_patch=2, embed_dim=16, depth=1,
                  num_heads=2, decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2, mask_ratio=0.5)
    setup = FamilySetup(model_kwargs=kwargs, train_transform=None, eval_transform=None,
                        train_set=mae_problem.tiny.CubeDataset(16, seed=1), val_set=mae_problem.tiny.CubeDataset(4, seed=2),
                        metadata={}, image_size=4, num_bands=4, run_label="tiny")
    params = {"model": {}, "transforms": {}, "loader": {"batch_size": 4},
              "train": dict(epochs=2, lr=2e-3, amp="off", progress=False, seed=0, on_new_data=on_new_data)}
    from spectral_training.families.runs import train_family

    run = train_family(family, setup, params, models_root, data_hash=data_hash)
    weights = torch.load(run.manifest["last_checkpoint"], weights_only=True)["model"]
    return {"manifest": run.manifest, "weights": weights}


def test_on_new_data_continue_starts_from_the_last_run_and_fresh_from_new_weights(tmp_path):
    """Promise: on new data `train.on_new_data: continue` starts from the configuration's last run
    (recorded as `continued_from`), `fresh` trains exactly as a first run on that data would."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    first = _train(tmp_path / "continue", "aaaaaaaaaa", "continue")
    shutil.copytree(tmp_path / "continue", tmp_path / "fresh")
    continued = _train(tmp_path / "continue", "bbbbbbbbbb", "continue")
    fresh = _train(tmp_path / "fresh", "bbbbbbbbbb", "fresh")
    never_before = _train(tmp_path / "first", "bbbbbbbbbb", "continue")
    name = first["manifest"]["run_name"]
    assert continued["manifest"]["continued_from"] == name and fresh["manifest"]["continued_from"] is None
    assert continued["manifest"]["run_name"] == fresh["manifest"]["run_name"] != name
    for key, tensor in never_before["weights"].items():
        assert torch.equal(fresh["weights"][key], tensor), key
    assert any(not torch.equal(continued["weights"][k], t) for k, t in never_before["weights"].items())
