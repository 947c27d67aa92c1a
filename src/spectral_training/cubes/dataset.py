"""A torch Dataset over the samples of one split of the cube store."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from .store import CubeStore


class NormalisedTileDataset(Dataset):
    """Yields ``{"cube": (C, H, W) float32 tensor, transformed, "label": int, "sample_id": str, "index": int}``.

    Reads go through :meth:`CubeStore.read_one` (one chunk, straight into memory); the store
    handle reopens its file in each process that reads, DataLoader workers included.
    """

    def __init__(
        self,
        store: CubeStore | str | Path,
        sample_index: pd.DataFrame,
        split: str | None,
        transform: Callable[[torch.Tensor], torch.Tensor],
    ):
        self.store = store if isinstance(store, CubeStore) else CubeStore(store)
        self.path = self.store.path
        rows = sample_index if split is None else sample_index[sample_index["split"] == split]
        self.store_indices = rows["store_index"].to_numpy(dtype=np.int64)
        self.sample_ids = rows["sample_id"].astype(str).tolist()
        self.labels = rows["label"].to_numpy(dtype=np.int64)
        self.split = split
        self.transform = transform

    def __len__(self) -> int:
        return len(self.store_indices)

    def raw(self, i: int) -> np.ndarray:
        """Sample ``i`` as stored (physical units), float32 (C, H, W)."""
        return self.store.read_one(int(self.store_indices[i]))

    def __getitem__(self, i: int) -> dict:
        cube = self.transform(torch.from_numpy(self.raw(i)))
        return {"cube": cube, "label": int(self.labels[i]), "sample_id": self.sample_ids[i], "index": int(i)}

    def close(self) -> None:
        self.store.close()
