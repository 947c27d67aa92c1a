"""A torch Dataset over the samples of a series store (``sample_layout: series``).

Each item is a dict (the contract every series family reads)::

    series       float32 (T, C, H, W)  normalised per band with the train statistics (computed
                                       over valid observations only); invalid pixels and
                                       padding dates are 0
    day_of_year  int64 (T,)            0 = padding
    date_mask    bool (T,)             True = a real date
    valid        bool (T, H, W)        True = observed (not cloud, shadow or fill)
    label        int64 ()              the store's label, -1 = unlabelled
    label_map    int64 (H, W)          only when the store has per-pixel maps: the stored class
                                       values, with the store's 0 (unlabelled) as -1 (ignore)
    sample_id    str

Reads go through the store's ``os.preadv`` fast path (one chunk for the series, one for the
mask, and one for the label map), opened again in each process that reads (DataLoader workers
included); dates are read once, at construction (a few bytes per sample).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from .store import CubeStore
from .store_reader import SampleReader


def normalisation_of(band_stats: dict, info: dict) -> tuple[np.ndarray, np.ndarray]:
    """Per-band (mean, std) float32 from the band statistics, checked against the store's bands;
    a zero std becomes 1 (the band is then only centred)."""
    names = list(band_stats.get("band_names") or [])
    if names and names != list(info["band_names"]) or len(band_stats["mean"]) != info["num_bands"]:
        raise ValueError(
            f"band statistics of bands {names or len(band_stats['mean'])} do not match the store's bands "
            f"{info['band_names']}. Fix: rerun `kedro run --pipeline normalisation_stats` for this dataset."
        )
    mean = np.asarray(band_stats["mean"], dtype=np.float32)
    std = np.asarray(band_stats["std"], dtype=np.float32)
    return mean, np.where(std > 0, std, np.float32(1.0)).astype(np.float32)


class SeriesDataset(Dataset):
    """Samples of a series store as dicts (see the module docstring).

    Args:
        store: the series store (a :class:`CubeStore` or its path).
        indices: rows of the sample index (a DataFrame with ``store_index``, ``sample_id`` and
            ``label``, e.g. ``sample_index[sample_index["split"] == "train"]``), or store indices.
        band_stats: the ``band_stats`` of the dataset (train split, valid observations).
        transform: optional callable applied to each item dict (augmentations), after normalising.
    """

    def __init__(self, store: CubeStore | str, indices: pd.DataFrame | Sequence[int] | np.ndarray, band_stats: dict,
                 transform: Callable[[dict], dict] | None = None):
        self.store = store if isinstance(store, CubeStore) else CubeStore(store)
        info = self.store.info
        if info["sample_layout"] != "series":
            raise ValueError(f"{self.store.path} holds {info['sample_layout']} samples, not series: SeriesDataset "
                             f"reads series stores (ingest a folder of series files, see the README).")
        if isinstance(indices, pd.DataFrame):
            self.store_indices = indices["store_index"].to_numpy(dtype=np.int64)
            self.sample_ids = indices["sample_id"].astype(str).tolist()
            self.labels = indices["label"].to_numpy(dtype=np.int64)
        else:
            self.store_indices = np.asarray(indices, dtype=np.int64).reshape(-1)
            self.sample_ids = [str(v) for v in self.store.column("sample_ids")[self.store_indices]]
            self.labels = self.store.column("labels")[self.store_indices].astype(np.int64)
        self.mean, self.std = normalisation_of(band_stats, info)
        self._scale = (1.0 / self.std)[None, :, None, None]
        self._shift = (-self.mean / self.std)[None, :, None, None]
        self.day_of_year = self.store.column("day_of_year")[self.store_indices].astype(np.int64)
        self.date_mask = self.store.column("date_mask")[self.store_indices].astype(bool)
        self.has_label_maps = bool(info["has_label_maps"])
        self.band_names = list(info["band_names"])
        self.wavelengths_nm = info["wavelengths_nm"]
        self.class_names = list(info["class_names"])
        self.max_seq_len = int(info["max_seq_len"])
        self.num_bands = int(info["num_bands"])
        self.tile_size = int(info["tile_size"])
        self.transform = transform
        self._maps: SampleReader | None = None
        self._maps_pid = -1

    def __len__(self) -> int:
        return len(self.store_indices)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_maps"], state["_maps_pid"] = None, -1  # file descriptors do not cross processes
        return state

    def _label_map(self, index: int) -> np.ndarray:
        if self._maps is None or self._maps_pid != os.getpid():
            self._maps = SampleReader(self.store.path, "label_maps", np.int32)
            self._maps_pid = os.getpid()
        return self._maps.read_one(index, None)

    def __getitem__(self, i: int) -> dict:
        index = int(self.store_indices[i])
        series = self.store.read_one(index)  # (T, C, H, W) float32, a fresh array
        valid = self.store.read_valid_one(index)  # (T, H, W) bool
        series *= self._scale  # (x - mean) / std as x * (1 / std) + (-mean / std): two passes
        series += self._shift
        series *= valid[:, None]  # invalid pixels and padding dates (never valid) become 0
        item = {
            "series": torch.from_numpy(series),
            "day_of_year": torch.from_numpy(self.day_of_year[i].copy()),
            "date_mask": torch.from_numpy(self.date_mask[i].copy()),
            "valid": torch.from_numpy(valid),
            "label": torch.tensor(int(self.labels[i]), dtype=torch.int64),
            "sample_id": self.sample_ids[i],
        }
        if self.has_label_maps:
            label_map = self._label_map(index).astype(np.int64)
            label_map[label_map == 0] = -1
            item["label_map"] = torch.from_numpy(label_map)
        return self.transform(item) if self.transform is not None else item

    def close(self) -> None:
        self.store.close()
        if self._maps is not None:
            self._maps.close()
            self._maps = None
