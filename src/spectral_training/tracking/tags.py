"""Tags that say where a run came from."""

from __future__ import annotations

import subprocess
from pathlib import Path


def git_commit(project_path: str | Path = ".") -> str | None:
    """The project's current commit (with ``-dirty`` when files changed), or None outside git."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project_path, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=project_path,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}-dirty" if dirty else sha
