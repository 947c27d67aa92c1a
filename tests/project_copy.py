"""A throwaway copy of the project's configuration, for end-to-end `kedro` runs in tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


class KedroProject:
    """A copy of the project's configuration in a temp folder, with its own data/ tree."""

    def __init__(self, root: Path):
        self.root = root

    def raw(self, dataset: str) -> Path:
        folder = self.root / "data" / "01_raw" / dataset
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    def artifact(self, *parts: str) -> Path:
        """The newest version of a versioned catalog artifact: ``<path>/<version>/<file>``."""
        from spectral_training.io import latest_version

        return latest_version(self.path(*parts))

    def kedro(self, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
        env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1", "MPLBACKEND": "Agg",
               "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}
        kedro = Path(sys.executable).with_name("kedro")
        return subprocess.run([str(kedro), *args], cwd=self.root, env=env, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)


def make_kedro_project(root: Path) -> KedroProject:
    """A throwaway copy of the project's configuration at ``root``, with an empty data/ tree."""
    root.mkdir(parents=True)
    for name in ("pyproject.toml", ".telemetry"):
        shutil.copy(PROJECT_ROOT / name, root / name)
    shutil.copytree(PROJECT_ROOT / "conf", root / "conf", ignore=shutil.ignore_patterns("local"))
    (root / "conf" / "local").mkdir()
    (root / "src").mkdir()  # Kedro checks it exists; the package itself is installed in the venv
    (root / "data").mkdir()
    return KedroProject(root)


