"""Tiny labelled stores and family parameters read from the project's own parameter files."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from spectral_training.cubes.ingest import build_sample_index
from spectral_training.cubes.stats import compute_band_stats
from spectral_training.cubes.store import CubeStore, TileBatch
from spectral_training.families import family_defaults
from spectral_training.families.params import deep_merge

PROJECT_ROOT = Path(__file__).resolve().parents[2]
FAMILIES_CONF = PROJECT_ROOT / "conf" / "base" / "parameters" / "families"

# Tiny versions of every family's default model: the same architectures, sizes a test trains in seconds.
TINY_MODELS = {
    "cnn": {"name": "resnet18"},
    "satellite_cnn": {},
    "flood_cnn": {},
    "vit": {"name": "vit_tiny_patch16_224", "image_size": 16,
            "kwargs": {"patch_size": 4, "embed_dim": 32, "depth": 2, "num_heads": 2}},
    "swin": {"name": "swin_tiny_patch4_window7_224", "image_size": 32,
             "kwargs": {"patch_size": 2, "window_size": 4, "embed_dim": 24, "depths": [1, 1], "num_heads": [2, 2]}},
    "eva02": {"name": "eva02_tiny_patch14_224", "image_size": 16,
              "kwargs": {"patch_size": 4, "embed_dim": 32, "depth": 2, "num_heads": 2}},
    "tv_vit": {"image_size": 16, "kwargs": {"patch_size": 4, "num_layers": 2, "num_heads": 2, "hidden_dim": 32,
                                            "mlp_dim": 64}},
}


def labelled_store(folder: Path, *, classes: int = 3, per_class: int = 16, bands: int = 6, tile: int = 16,
                   band_names: list[str] | None = None, wavelengths: list[float] | None = None,
                   seed: int = 0) -> tuple[CubeStore, pd.DataFrame, dict]:
    """A store of class-separable tiles (class k brightens band k), its index and train band stats."""
    rng = np.random.default_rng(seed)
    n = classes * per_class
    labels = np.repeat(np.arange(classes), per_class)
    cubes = rng.normal(1.0, 0.3, size=(n, bands, tile, tile)).astype("f4")
    for i, label in enumerate(labels):
        cubes[i, label % bands] += 1.5
    store = CubeStore(folder / "cubes.h5")
    store.create(num_bands=bands, tile_size=tile, band_names=band_names, wavelengths_nm=wavelengths,
                 class_names=[f"c{k}" for k in range(classes)])
    store.append([TileBatch(cubes=cubes, sample_ids=[f"c{label}/t{i}.npy" for i, label in enumerate(labels)],
                            source_file="synthetic", windows=np.zeros((n, 4), np.int32), labels=labels)])
    index = build_sample_index(store, {"train": 0.6, "val": 0.2, "test": 0.2})
    train = index.loc[index["split"] == "train", "store_index"].to_numpy()
    stats = compute_band_stats(store, train, show_progress=False)
    return store, index, stats


def _load(name: str) -> dict:
    return yaml.safe_load((FAMILIES_CONF / f"{name}.yml").read_text())


def family_layers(family: str, overrides: dict | None = None) -> tuple[dict, list[dict]]:
    """(the family's block from its file with ``overrides`` merged in, the default blocks it merges over)."""
    defaults = [yaml.safe_load((PROJECT_ROOT / "conf" / "base" / "parameters_training_defaults.yml").read_text())
                ["training_defaults"]]
    if "classifier_defaults" in family_defaults(family):
        defaults.append(_load("_classifier_defaults")["classifier_defaults"])
    block = copy.deepcopy(_load(family)[family])
    return deep_merge(block, overrides or {}), defaults


def tiny_overrides(family: str) -> dict:
    """Overrides that make a family's model tiny and its run short, keeping its recipe."""
    out: dict = {"train": {"epochs": 2, "progress": False, "checkpoint_every_steps": None, "warmup_epochs": 1},
                 "loader": {"batch_size": 8}, "evaluation": {"show_progress": False, "batch_size": 8}}
    if family in TINY_MODELS:
        out["model"] = TINY_MODELS[family]
    return out
