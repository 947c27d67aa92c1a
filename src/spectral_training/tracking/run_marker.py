"""A marker file that ties an unfinished training run to its MLflow run.

Written into the run's folder (``<runs_root>/<run name>/unfinished_run.json``) when training
starts, removed when it ends normally; a run killed (even with kill -9) leaves it behind, so the
next `kedro run` of the same configuration on the same data continues the same MLflow run, and
any other configuration (or the same one on new data) starts its own.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

MARKER_NAME = "unfinished_run.json"


def marker_path(runs_root: str | Path, run_name: str) -> Path:
    return Path(runs_root) / run_name / MARKER_NAME


def write_marker(runs_root: str | Path, mlflow_run_id: str, run_name: str, *, config_key: str | None = None,
                 data_hash: str | None = None) -> None:
    path = marker_path(runs_root, run_name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"mlflow_run_id": mlflow_run_id, "run_name": run_name, "config_key": config_key,
                               "data_hash": data_hash}))
    os.replace(tmp, path)


def read_markers(runs_root: str | Path) -> list[dict]:
    """Every unfinished run's marker under ``runs_root``, newest first."""
    found = []
    for path in sorted(Path(runs_root).glob(f"*/{MARKER_NAME}"), key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            found.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError):
            continue  # a marker half-written by a killed process names no run
    return found


def find_marker(runs_root: str | Path, config_key: str, data_hash: str | None) -> dict | None:
    """The unfinished run of this configuration (and data, when known), or None.

    ``data_hash`` None (no sample index yet) matches the configuration's newest unfinished run.
    """
    for marker in read_markers(runs_root):
        if marker.get("config_key") == config_key and (data_hash is None or marker.get("data_hash") == data_hash):
            return marker
    return None


def remove_marker(runs_root: str | Path, run_name: str) -> None:
    marker_path(runs_root, run_name).unlink(missing_ok=True)
