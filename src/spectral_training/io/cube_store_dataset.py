"""``CubeStoreDataset``: the catalog entry of a dataset's appendable HDF5 cube store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError

from spectral_training.cubes.ingest import PendingAppend
from spectral_training.cubes.store import CubeStore


class CubeStoreDataset(AbstractDataset[PendingAppend, CubeStore]):
    """Loads a :class:`CubeStore` handle; saving a :class:`PendingAppend` appends to the file.

    Kedro forbids a pipeline to read and write one entry, and an HDF5 store must not be
    rewritten to grow: so saving appends (new tiles only, by content hash) and loading returns a
    handle that reads lazily, chunk by chunk.
    """

    def __init__(self, filepath: str, metadata: dict[str, Any] | None = None):
        self._filepath = Path(filepath)
        self.metadata = metadata

    def load(self) -> CubeStore:
        # A handle, even when no file exists yet (every raw file rejected): its readers then
        # raise an error that says to run ingestion, and the ingestion report still gets written.
        return CubeStore(self._filepath)

    def save(self, data: PendingAppend) -> None:
        if not isinstance(data, PendingAppend):
            raise DatasetError(f"CubeStoreDataset saves a PendingAppend from the ingestion node, got {type(data).__name__}")
        data.write_into(CubeStore(self._filepath))

    def _exists(self) -> bool:
        return self._filepath.is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}
