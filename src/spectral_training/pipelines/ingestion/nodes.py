"""Nodes of the ingestion pipeline: scan -> append -> index and report."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from spectral_training.cubes.ingest import (
    IngestionParams,
    IngestionPlan,
    PendingAppend,
    build_report,
    build_sample_index,
    scan_folder,
)
from spectral_training.cubes.store import CubeStore


def scan_raw_files(raw_folder: Path, dataset: str, ingestion_params: dict) -> dict:
    """Read and check every file of the dataset's raw folder once.

    Args:
        raw_folder: ``data/01_raw/<dataset>/`` (checked to exist by its catalog dataset).
        dataset: the dataset name.
        ingestion_params: ``ingestion`` parameters.
    Returns:
        The ingestion plan (accepted files with shapes and classes, rejected files with reasons).
    """
    params = IngestionParams.from_dict(ingestion_params)
    return scan_folder(raw_folder, params, dataset=dataset).to_dict()


def append_tiles(ingestion_plan: dict, ingestion_params: dict) -> PendingAppend:
    """The append of the plan's tiles to the store, carried out by the ``cube_store`` dataset on save.

    Returns:
        A :class:`PendingAppend`; saving it tiles the accepted files and appends new tiles only.
    """
    return PendingAppend(IngestionPlan.from_dict(ingestion_plan), IngestionParams.from_dict(ingestion_params))


def index_and_report(cube_store: CubeStore, ingestion_plan: dict, ingestion_params: dict) -> tuple[pd.DataFrame, dict]:
    """The sample index (with splits) and the ingestion report of this run.

    Returns:
        ``sample_index`` (one row per stored sample) and ``ingestion_report``.
    """
    params = IngestionParams.from_dict(ingestion_params)
    plan = IngestionPlan.from_dict(ingestion_plan)
    record = cube_store.ingestion_log()[-1] if cube_store.exists() else {}
    index = build_sample_index(cube_store, params.splits, params.split_block_px)
    return index, build_report(plan, record, index, cube_store)
