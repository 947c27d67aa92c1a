"""The ``unet_temporal`` samples: series of one split, each with the dates it may hold out.

Items are :class:`spectral_training.cubes.series_dataset.SeriesDataset` items, keyed for the
engine (its sample tensor is called ``cube``): ``cube`` (T, C, H, W) normalised, ``day_of_year``
(T,), ``date_mask`` (T,), ``valid`` (T, H, W), ``eligible`` (T,) bool (dates that may be held
out), ``target_date`` () the date held out in validation and evaluation, ``sample_id``, ``index``.

A date is eligible when it is real, has at least ``min_valid`` of its pixels observed (a date
that is mostly cloud scores few pixels and says little), and, with ``interior_only``, has a real
date before and after it (linear interpolation is then defined, not only persistence). A series
with no such date falls back to the real dates with any valid pixel. ``target_date`` is drawn
from the eligible dates with a generator seeded by the sample id and ``seed``, so a series holds
out the same date in every epoch's validation, in evaluation, for the model and the baselines
alike, whatever the split's order or size. Training draws a new date per step instead (see
:class:`spectral_training.families.unet.temporal.TemporalObjective`).
"""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from torch.utils.data import Dataset

from spectral_training.cubes.series_dataset import SeriesDataset
from spectral_training.cubes.store import CubeStore


def eligible_targets(date_mask: Tensor, valid: Tensor, min_valid: float, interior_only: bool) -> Tensor:
    """(T,) bool: the dates of one series that may be held out (see the module docstring)."""
    real = date_mask.bool()
    observed = valid.flatten(1).float().mean(dim=1)  # (T,) share of observed pixels
    eligible = real & (observed >= min_valid) & (observed > 0)
    if interior_only:
        positions = torch.nonzero(real).flatten()
        if len(positions) >= 3:
            inside = torch.zeros_like(real)
            inside[positions[1:-1]] = True  # dates are stored in time order
            eligible &= inside
        else:
            eligible = torch.zeros_like(real)
    if not eligible.any():  # nothing fits the rule: any real date with an observed pixel
        eligible = real & (observed > 0)
    return eligible


class TemporalSamples(Dataset):
    """The series of ``rows`` (sample-index rows) with their eligible and held-out dates."""

    def __init__(self, store: CubeStore, rows: pd.DataFrame, band_stats: dict, *, min_valid: float,
                 interior_only: bool, seed: int = 0) -> None:
        self.rows = rows.reset_index(drop=True)
        self.series = SeriesDataset(store, self.rows, band_stats)
        self.min_valid, self.interior_only, self.seed = float(min_valid), bool(interior_only), int(seed)

    def __len__(self) -> int:
        return len(self.series)

    def held_out(self, sample_id: str, eligible: Tensor) -> int:
        """The date this series holds out in validation and evaluation (stable per sample id and seed)."""
        choices = torch.nonzero(eligible).flatten().tolist()
        if not choices:
            return 0  # no observed pixel in the whole series: nothing is scored on it
        rng = np.random.default_rng([self.seed, zlib.crc32(sample_id.encode())])
        return int(choices[int(rng.integers(len(choices)))])

    def __getitem__(self, i: int) -> dict:
        item = self.series[i]
        eligible = eligible_targets(item["date_mask"], item["valid"], self.min_valid, self.interior_only)
        return {"cube": item["series"], "day_of_year": item["day_of_year"], "date_mask": item["date_mask"],
                "valid": item["valid"], "eligible": eligible,
                "target_date": torch.tensor(self.held_out(item["sample_id"], eligible), dtype=torch.int64),
                "sample_id": item["sample_id"], "index": int(i)}
