"""The SITS families' samples: the series of one split, keyed for the training engine.

Items come from :class:`spectral_training.cubes.series_dataset.SeriesDataset` (normalised with
the train split's statistics over valid observations; invalid pixels and padded dates are 0).
The engine's sample tensor is called ``cube`` (its batch-size and pre-flight checks read it), so
the series is handed on under that name: ``cube`` (T, C, H, W), ``day_of_year`` (T,),
``date_mask`` (T,), ``valid`` (T, H, W), ``label`` (the class index, -1 = unlabelled),
``sample_id`` and ``index``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from torch.utils.data import Dataset

from spectral_training.cubes.series_dataset import SeriesDataset
from spectral_training.cubes.store import CubeStore


class SitsSamples(Dataset):
    """The series of ``rows`` (sample-index rows whose ``label`` is already a class index or -1)."""

    def __init__(self, store: CubeStore, rows: pd.DataFrame, band_stats: dict):
        self.rows = rows.reset_index(drop=True)
        self.series = SeriesDataset(store, self.rows["store_index"].to_numpy(dtype=np.int64), band_stats)
        self.labels = self.rows["label"].to_numpy(dtype=np.int64)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        item = self.series[i]
        return {"cube": item["series"], "day_of_year": item["day_of_year"], "date_mask": item["date_mask"],
                "valid": item["valid"], "label": int(self.labels[i]), "sample_id": str(item["sample_id"]),
                "index": int(i)}


def split_rows(index: pd.DataFrame, split: str) -> pd.DataFrame:
    return index[index["split"] == split].reset_index(drop=True)
