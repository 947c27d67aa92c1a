"""Transform validation compares the data's band count with the one the built model takes."""

from __future__ import annotations

import numpy as np
import pandas as pd

from spectral_training.cubes.dataset import NormalisedTileDataset
from spectral_training.cubes.store import CubeStore, TileBatch
from spectral_training.cubes.transforms import build_transforms
from spectral_training.models import build_mae
from spectral_training.training.preflight import validate_setup

BANDS, TILE = 6, 8


def _mae(bands: int):
    return build_mae("tiny", bands, TILE, spatial_patch=4, spectral_patch=3, embed_dim=16, depth=1, num_heads=2,
                     decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2)


def _datasets(tmp_path):
    store = CubeStore(tmp_path / "c.h5")
    store.create(num_bands=BANDS, tile_size=TILE, band_names=None, wavelengths_nm=None)
    values = np.random.default_rng(0).random((4, BANDS, TILE, TILE)).astype("f4")
    store.append([TileBatch(cubes=values, sample_ids=[f"s{i}" for i in range(4)], source_file="x",
                            windows=np.zeros((4, 4), np.int32), labels=np.full(4, -1))])
    index = pd.DataFrame({"store_index": range(4), "sample_id": [f"s{i}" for i in range(4)], "label": [-1] * 4,
                          "split": ["train"] * 3 + ["val"]})
    transform = build_transforms([], {"mean": [0.5] * BANDS, "std": [0.3] * BANDS}, where="mae.transforms.train")
    return (NormalisedTileDataset(store, index, "train", transform), NormalisedTileDataset(store, index, "val", transform),
            transform)


def _validate(tmp_path, built_bands: int) -> dict:
    train_set, val_set, transform = _datasets(tmp_path)
    # model_bands is what a family declares from the store (6); the model actually built may differ.
    return validate_setup(train_set, val_set, transform, transform, tile_size=TILE, store_bands=BANDS,
                          model_builder=lambda: _mae(built_bands), model_image_size=TILE, model_bands=BANDS,
                          band_names=[f"b{i}" for i in range(BANDS)], steps=1)


def test_a_model_built_for_other_bands_than_the_data_fails_the_band_check(tmp_path):
    """Promise: transform validation reads the band count from the model that will train (here an MAE
    built for 7 bands), not from the store twice, so 6-band data and a 7-band model fail the band check
    with both counts named, before any training step (and before the forward pass)."""
    report = _validate(tmp_path, built_bands=7)
    assert not report["passed"]
    [bands] = [c for c in report["checks"] if c["name"] == "shape:bands"]
    assert not bands["passed"] and (bands["data_bands"], bands["model_bands"]) == (6, 7)
    assert "the data has 6 bands, the model takes 7" in bands["detail"]
    assert bands["model_bands_from"] == "model.num_bands"
    assert [c["name"] for c in report["checks"] if c["name"] == "forward_backward"] == ["forward_backward"]
    assert report["checks"][-1].get("skipped")  # forward/backward not run on a known mismatch
    assert _validate(tmp_path / "ok", built_bands=6)["passed"]
