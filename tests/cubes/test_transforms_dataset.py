"""Transforms built from parameters, and the torch Dataset over the store."""

import numpy as np
import pandas as pd
import pytest
import torch

from spectral_training.cubes.dataset import NormalisedTileDataset
from spectral_training.cubes.store import CubeStore, TileBatch
from spectral_training.cubes.transforms import TransformError, build_transforms

STATS = {"mean": [1.0, 2.0, 3.0], "std": [2.0, 0.0, 4.0]}


def test_normalisation_uses_band_stats_and_survives_zero_std():
    t = build_transforms([], STATS, where="transforms.eval")
    x = torch.stack([torch.full((4, 4), v) for v in (3.0, 2.0, 11.0)])
    out = t(x)
    assert torch.allclose(out[:, 0, 0], torch.tensor([1.0, 0.0, 2.0]))
    assert t.normalise.zero_std_bands == [1]
    assert torch.allclose(t.normalise.inverse(out), x)


def test_output_size_is_known_without_data():
    t = build_transforms([{"resize": 448}, {"center_crop": 400}], STATS, where="transforms.train")
    assert t.out_size(32) == 400
    assert t(torch.zeros(3, 32, 32)).shape == (3, 400, 400)


def test_a_crop_larger_than_its_input_names_the_parameter():
    t = build_transforms([{"random_crop": 64}], STATS, where="transforms.train")
    with pytest.raises(TransformError, match=r"transforms.train\[0\].random_crop=64"):
        t.out_size(32)


def test_unknown_transform_lists_the_known_ones():
    with pytest.raises(TransformError, match="center_crop"):
        build_transforms([{"blur": 3}], STATS, where="transforms.train")


def test_dataset_yields_normalised_cubes_of_one_split(tmp_path):
    store = CubeStore(tmp_path / "c.h5")
    store.create(num_bands=3, tile_size=4, band_names=None, wavelengths_nm=None)
    values = np.random.rand(4, 3, 4, 4).astype("f4") + 5
    store.append([TileBatch(cubes=values, sample_ids=list("abcd"), source_file="x",
                            windows=np.zeros((4, 4), np.int32), labels=np.arange(4))])
    index = pd.DataFrame({"store_index": range(4), "sample_id": list("abcd"), "label": range(4),
                          "split": ["train", "val", "train", "test"]})
    ds = NormalisedTileDataset(store, index, "train", build_transforms([], STATS, where="t"))
    assert len(ds) == 2
    item = ds[1]
    assert item["sample_id"] == "c" and item["label"] == 2
    expected = (torch.from_numpy(values[2]) - torch.tensor([1.0, 2.0, 3.0])[:, None, None]) / torch.tensor([2.0, 1.0, 4.0])[:, None, None]
    assert torch.allclose(item["cube"], expected)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=1)
    batch = next(iter(loader))
    assert batch["cube"].shape == (2, 3, 4, 4) and batch["sample_id"] == ["a", "c"]
