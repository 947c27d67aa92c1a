"""A marker file that ties an unfinished training run to its MLflow run.

Written when training starts, removed when it ends normally; a run killed (even with kill -9)
leaves it behind, so the next `kedro run` continues the same MLflow run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

MARKER_NAME = "unfinished_run.json"


def marker_path(runs_root: str | Path) -> Path:
    return Path(runs_root) / MARKER_NAME


def write_marker(runs_root: str | Path, mlflow_run_id: str, run_name: str) -> None:
    path = marker_path(runs_root)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"mlflow_run_id": mlflow_run_id, "run_name": run_name}))
    os.replace(tmp, path)


def read_marker(runs_root: str | Path) -> dict | None:
    path = marker_path(runs_root)
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def remove_marker(runs_root: str | Path) -> None:
    marker_path(runs_root).unlink(missing_ok=True)
