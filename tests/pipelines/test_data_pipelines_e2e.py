"""End to end: real `kedro run` commands on tiny raw folders, broken files included."""

import json

import pandas as pd
import pytest
from corpus import write_broken_files, write_hdf5_cube

pytestmark = pytest.mark.e2e

TINY = ["--params", "dataset=tiny,ingestion.tile_size=4,ingestion.show_progress=false,"
        "normalisation_stats.show_progress=false"]


def test_ingestion_and_stats_on_a_folder_with_broken_files(kedro_project):
    raw = kedro_project.raw("tiny")
    write_hdf5_cube(raw / "a.h5", (4, 8, 8), with_labels=True, wavelengths=[450, 550, 650, 750])
    write_hdf5_cube(raw / "b.h5", (4, 8, 8), layout="CHW", seed=2)
    broken = write_broken_files(raw / "broken", (4, 8, 8))
    before = {p: p.read_bytes() for p in raw.rglob("*") if p.is_file()}

    run = kedro_project.kedro("run", "--pipeline", "data", *TINY)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    report = json.loads(kedro_project.artifact("data/08_reporting/tiny/ingestion_report.json").read_text())
    assert {r["file"] for r in report["rejected"]} == {f"broken/{name}" for name in broken}
    assert all(r["reason"] for r in report["rejected"])
    assert report["counts"]["files_ingested"] == 2 and report["counts"]["tiles_appended"] == 8
    index = pd.read_parquet(kedro_project.path("data/02_intermediate/tiny/sample_index.parquet"))
    assert len(index) == 8 and set(index.split) <= {"train", "val", "test"}
    stats = json.loads(kedro_project.artifact("data/03_primary/tiny/band_stats.json").read_text())
    assert stats["split"] == "train" and len(stats["bands"]) == 4
    assert stats["wavelengths_nm"] == [450, 550, 650, 750]
    assert before == {p: p.read_bytes() for p in raw.rglob("*") if p.is_file()}

    diagnostics = kedro_project.kedro("diagnostics", "--params", "dataset=tiny")
    assert diagnostics.returncode == 0, diagnostics.stderr[-3000:]
    assert "store  [ok]" in diagnostics.stdout and "band_stats  [ok]" in diagnostics.stdout
    assert "checkpoint  [PROBLEM]" in diagnostics.stdout and "mae_pretrain" in diagnostics.stdout

    write_hdf5_cube(raw / "c.h5", (4, 8, 8), seed=9)
    rerun = kedro_project.kedro("run", "--pipeline", "ingestion", *TINY)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    report = json.loads(kedro_project.artifact("data/08_reporting/tiny/ingestion_report.json").read_text())
    assert report["counts"]["tiles_appended"] == 4 and report["counts"]["samples_in_store"] == 12


def test_a_dataset_name_with_a_path_is_refused_before_anything_is_written(kedro_project):
    run = kedro_project.kedro("run", "--pipeline", "ingestion", "--params", "dataset=../escape")
    assert run.returncode != 0
    assert "plain folder name" in run.stdout + run.stderr
    assert not [p for p in kedro_project.path("data").rglob("*")]


def test_a_missing_dataset_lists_the_ones_that_exist(kedro_project):
    kedro_project.raw("landcover")
    run = kedro_project.kedro("run", "--pipeline", "ingestion", "--params", "dataset=nope")
    assert run.returncode != 0
    assert "landcover" in run.stdout + run.stderr


def test_registry_lists_the_pipelines(kedro_project):
    run = kedro_project.kedro("registry", "list")
    assert run.returncode == 0, run.stderr
    for name in ("demo_data", "ingestion", "normalisation_stats"):
        assert name in run.stdout
