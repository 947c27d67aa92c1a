"""A torch Dataset over the samples of one split of the cube store."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from .store import CubeStore, read_samples


class NormalisedTileDataset(Dataset):
    """Yields ``{"cube": (C, H, W) float32 tensor, transformed, "label": int, "sample_id": str, "index": int}``.

    The HDF5 file is opened lazily in each process that reads (DataLoader workers included),
    because an h5py handle must not cross a fork.
    """

    def __init__(
        self,
        store: CubeStore | str | Path,
        sample_index: pd.DataFrame,
        split: str | None,
        transform: Callable[[torch.Tensor], torch.Tensor],
    ):
        self.path = Path(store.path if isinstance(store, CubeStore) else store)
        rows = sample_index if split is None else sample_index[sample_index["split"] == split]
        self.store_indices = rows["store_index"].to_numpy(dtype=np.int64)
        self.sample_ids = rows["sample_id"].astype(str).tolist()
        self.labels = rows["label"].to_numpy(dtype=np.int64)
        self.split = split
        self.transform = transform
        self._file: h5py.File | None = None
        self._pid: int | None = None

    def __len__(self) -> int:
        return len(self.store_indices)

    def _cubes(self) -> h5py.Dataset:
        import os

        if self._file is None or self._pid != os.getpid():
            self._file = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._file["cubes"]

    def raw(self, i: int) -> np.ndarray:
        """Sample ``i`` as stored (physical units), float32 (C, H, W)."""
        return read_samples(self._cubes(), [self.store_indices[i]])[0]

    def __getitem__(self, i: int) -> dict:
        cube = self.transform(torch.from_numpy(self.raw(i)))
        return {"cube": cube, "label": int(self.labels[i]), "sample_id": self.sample_ids[i], "index": int(i)}

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_file"] = None  # reopened in the worker
        return state

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
