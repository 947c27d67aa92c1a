"""``RawFolderDataset``: a dataset's folder of raw files under ``data/01_raw/``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError

from spectral_training.cubes.ingest import resolve_dataset_folder


class RawFolderDataset(AbstractDataset[dict[str, bytes], Path]):
    """Loads the folder's path (checked to exist); saves new files into it, never changing one.

    Raw data is the one thing a rerun must never touch: saving a file that already exists with
    the same bytes is a no-op, and with different bytes an error.
    """

    def __init__(self, path: str, metadata: dict[str, Any] | None = None):
        self._path = Path(path)
        self.metadata = metadata

    def load(self) -> Path:
        try:
            return resolve_dataset_folder(self._path)
        except (FileNotFoundError, ValueError) as err:
            raise DatasetError(str(err)) from None

    def save(self, data: dict[str, bytes]) -> None:
        self._path.mkdir(parents=True, exist_ok=True)
        for name, content in data.items():
            target = self._path / name
            if Path(name).is_absolute() or ".." in Path(name).parts:
                raise DatasetError(f"{name}: raw file names must stay inside {self._path}")
            if target.exists():
                if target.read_bytes() != content:
                    raise DatasetError(
                        f"{target} exists with other contents; raw files are never overwritten. "
                        f"Move it away if you want it written again."
                    )
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.partial")
            tmp.write_bytes(content)
            os.replace(tmp, target)

    def _exists(self) -> bool:
        return self._path.is_dir()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}
