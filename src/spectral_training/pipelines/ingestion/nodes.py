"""Nodes of the ingestion pipeline: scan -> append -> index and report.

The raw folder holds cubes or time series; ``ingestion.sample_layout`` (``auto`` by default:
series when HDF5 files hold a 4-D dataset) picks the engine, so one pipeline serves both.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from spectral_training.cubes.ingest import IngestionPlan, PendingAppend, build_report, build_sample_index, scan_folder
from spectral_training.cubes.series_ingest import (
    PendingCubeAppend,
    PendingSeriesAppend,
    build_series_report,
    detect_sample_layout,
    scan_series_folder,
    split_ingestion_params,
)
from spectral_training.cubes.store import CubeStore


def _is_series(plan: IngestionPlan) -> bool:
    return plan.params.get("sample_layout") == "series"


def scan_raw_files(raw_folder: Path, dataset: str, ingestion_params: dict) -> dict:
    """Read and check the header of every file of the dataset's raw folder (cubes: no pixel read;
    the append reads each accepted file's pixels once and may still reject it, into the report).

    Args:
        raw_folder: ``data/01_raw/<dataset>/`` (checked to exist by its catalog dataset).
        dataset: the dataset name.
        ingestion_params: ``ingestion`` parameters.
    Returns:
        The ingestion plan (accepted files with shapes and classes, rejected files with reasons;
        for series, ``params.sample_layout == "series"`` and the dates of every file).
    """
    params, layout, series = split_ingestion_params(ingestion_params)
    if detect_sample_layout(raw_folder, layout, series) == "series":
        return scan_series_folder(raw_folder, params, series, dataset=dataset).to_dict()
    return scan_folder(raw_folder, params, dataset=dataset).to_dict()


def append_tiles(ingestion_plan: dict, ingestion_params: dict) -> PendingAppend:
    """The append of the plan's tiles to the store, carried out by the ``cube_store`` dataset on save.

    Returns:
        A :class:`PendingAppend` (or its series counterpart); saving it tiles the accepted files
        and appends new samples only.
    """
    params, _, series = split_ingestion_params(ingestion_params)
    plan = IngestionPlan.from_dict(ingestion_plan)
    if _is_series(plan):
        return PendingSeriesAppend(plan, params, series)
    return PendingCubeAppend(plan, params)


def index_and_report(cube_store: CubeStore, ingestion_plan: dict, ingestion_params: dict) -> tuple[pd.DataFrame, dict]:
    """The sample index (with splits) and the ingestion report of this run.

    Returns:
        ``sample_index`` (one row per stored sample) and ``ingestion_report``.
    """
    params, _, _ = split_ingestion_params(ingestion_params)
    plan = IngestionPlan.from_dict(ingestion_plan)
    record = cube_store.ingestion_log()[-1] if cube_store.exists() else {}
    index = build_sample_index(cube_store, params.splits, params.split_block_px)
    report = build_series_report if _is_series(plan) else build_report
    return index, report(plan, record, index, cube_store)
