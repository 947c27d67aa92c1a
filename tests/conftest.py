"""Shared fixtures: tiny real raw files and a throwaway Kedro project for end-to-end runs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent / "cubes"))  # the file corpus: `from corpus import ...`
sys.path.insert(0, str(Path(__file__).parent))  # `from project_copy import ...`

os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow: run with `make test-all` (pytest --run-slow)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


from project_copy import KedroProject, make_kedro_project  # noqa: E402


@pytest.fixture
def kedro_project(tmp_path: Path) -> KedroProject:
    return make_kedro_project(tmp_path / "project")
