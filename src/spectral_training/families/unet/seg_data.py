"""Per-pixel labels for segmentation: the store's label maps -> class indices, a Dataset, pixel weights.

Label maps hold the source's raw values: 0 = unlabelled, 1..K = classes. The classes are the
values present in the maps of every split (so a class seen only in test is scored); with
``positive_class`` the task is binary (that class = 1 against every other labelled class = 0),
as the classifier families do it. Unlabelled pixels become -1 and are ignored by the loss and
the metrics.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from spectral_training.cubes.store import CubeStore
from spectral_training.cubes.transforms import Compose, Resize
from spectral_training.families.classifier.labels import LabelSpace, label_space


class NoLabelMapsError(ValueError):
    """The store keeps no per-pixel label maps."""


def store_label_maps(store: CubeStore, store_indices: np.ndarray) -> np.ndarray:
    """The raw label maps (N, T, T) of these store rows (empty (0, T, T) for no rows)."""
    tile = int(store.info["tile_size"])
    if len(store_indices) == 0:
        return np.zeros((0, tile, tile), dtype=np.int64)
    maps = store.read_label_maps(store_indices)
    if maps is None:
        raise NoLabelMapsError(
            f"the store {store.path} keeps no per-pixel label maps, so there is nothing to segment: give each raw "
            f"file a 2-D HDF5 dataset `labels` (0 = unlabelled, 1..K = classes) and rerun ingestion "
            f"(ingestion.label_source must not be none)")
    return maps.astype(np.int64)


def pixel_label_space(store: CubeStore, sample_index: pd.DataFrame, positive_class: str | int | None,
                      *, where: str) -> LabelSpace:
    """The classes of the labelled pixels of every stored tile of the index."""
    maps = store_label_maps(store, sample_index["store_index"].to_numpy(dtype=np.int64))
    values = np.unique(maps[maps > 0])
    return label_space(pd.DataFrame({"label": values}), list(store.info.get("class_names") or []), positive_class,
                       where=where)


def encode_maps(maps: np.ndarray, space: LabelSpace) -> np.ndarray:
    """Raw maps -> class indices, -1 for unlabelled (0) or unknown values."""
    raw = np.where(maps > 0, maps, -1)
    return space.encode(raw.ravel()).reshape(maps.shape)


def pixel_class_weights(encoded_train_maps: np.ndarray, num_classes: int) -> list[float]:
    """``labelled pixels / (classes x pixels of the class)`` on the train split (0 for an absent class)."""
    counts = np.bincount(encoded_train_maps[encoded_train_maps >= 0].ravel(), minlength=num_classes).astype(np.float64)
    total = counts.sum()
    return [float(total / (num_classes * c)) if c > 0 else 0.0 for c in counts]


def check_joint_transforms(transform: Compose, where: str) -> None:
    """Geometric steps are applied to the cube and its label map alike; a resize would blend classes."""
    for name, step in zip(transform.names, transform.steps):
        if isinstance(step, Resize):
            raise ValueError(f"{name}: a resize interpolates the label map's classes; segmentation takes "
                             f"flip, rotate90, random_crop and center_crop (set {where} accordingly)")


class SegmentationTileDataset(Dataset):
    """Yields ``{"cube": (C, H, W) normalised + transformed, "label_map": int64 (H, W) class indices
    (-1 = unlabelled), "label": int, "sample_id": str, "index": int}``; the random geometric steps
    move the cube and its map together. Tiles without a labelled pixel are left out. The label maps
    of the split are read once (they are small next to the cubes)."""

    def __init__(self, store: CubeStore, sample_index: pd.DataFrame, split: str | None, transform: Compose,
                 space: LabelSpace) -> None:
        rows = sample_index if split is None else sample_index[sample_index["split"] == split]
        indices = rows["store_index"].to_numpy(dtype=np.int64)
        maps = encode_maps(store_label_maps(store, indices), space)
        keep = (maps >= 0).reshape(len(maps), -1).any(axis=1) if len(maps) else np.zeros(0, dtype=bool)
        self.store, self.transform, self.split = store, transform, split
        self.store_indices = indices[keep]
        self.sample_ids = rows["sample_id"].astype(str).to_numpy()[keep].tolist()
        self.maps = maps[keep]

    def __len__(self) -> int:
        return len(self.store_indices)

    def raw(self, i: int) -> np.ndarray:
        """Sample ``i`` as stored (physical units), float32 (C, H, W)."""
        return self.store.read_one(int(self.store_indices[i]))

    def __getitem__(self, i: int) -> dict:
        cube = self.transform.normalise(torch.from_numpy(self.raw(i)))
        joint = torch.cat([cube, torch.from_numpy(self.maps[i]).to(cube.dtype)[None]])
        for step in self.transform.steps:  # one draw of each random step for the cube and its map
            joint = step(joint)
        label_map = joint[-1].round().to(torch.int64)
        return {"cube": joint[:-1].contiguous(), "label_map": label_map.contiguous(), "label": -1,
                "sample_id": self.sample_ids[i], "index": int(i)}
