"""unet_mim and unet_seg on a tiny store with per-pixel label maps: pretraining, then segmentation
from its encoder, through the shared family runner."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spectral_training.cubes.ingest import build_sample_index
from spectral_training.cubes.stats import compute_band_stats
from spectral_training.cubes.store import CubeStore, TileBatch
from spectral_training.families import get_family, resolve
from spectral_training.families.runs import train_family
from spectral_training.families.unet.seg import segmentation_loss
from family_data import family_layers

TINY = {"model": {"decoder_channels": [16, 8]}, "loader": {"batch_size": 8, "num_workers": 0},
        "train": {"epochs": 1, "progress": False, "checkpoint_every_steps": None, "warmup_epochs": 0},
        "evaluation": {"show_progress": False, "batch_size": 8, "plot_samples": 2}}


def _mapped_store(folder, n=24, bands=4, tile=16):
    """Tiles whose left half is class 1 (band 0 bright) and right half class 2 (band 1 bright);
    the bottom rows are unlabelled (0)."""
    rng = np.random.default_rng(0)
    cubes = rng.normal(0.0, 0.2, size=(n, bands, tile, tile)).astype("f4")
    maps = np.zeros((n, tile, tile), np.int32)
    maps[:, :12, : tile // 2], maps[:, :12, tile // 2:] = 1, 2
    cubes[:, 0, :, : tile // 2] += 1.0
    cubes[:, 1, :, tile // 2:] += 1.0
    store = CubeStore(folder / "cubes.h5")
    store.create(num_bands=bands, tile_size=tile, band_names=[f"b{i}" for i in range(bands)], wavelengths_nm=None)
    store.append([TileBatch(cubes=cubes, sample_ids=[f"f@{i},0" for i in range(n)], source_file="f",
                            windows=np.zeros((n, 4), np.int32), labels=np.ones(n, np.int64), label_maps=maps)])
    index = build_sample_index(store, {"train": 0.6, "val": 0.2, "test": 0.2})
    stats = compute_band_stats(store, index.loc[index["split"] == "train", "store_index"].to_numpy(), show_progress=False)
    return store, index, stats


def _params(name, overrides=None):
    block, defaults = family_layers(name, {**TINY, **(overrides or {})})
    return resolve(name, block, defaults[0])


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("unet")
    store, index, stats = _mapped_store(folder)
    family = get_family("unet_mim")
    params = _params("unet_mim")
    setup = family.prepare(store, index, stats, params)
    run = train_family(family, setup, params, folder / "models", device="cpu")
    return store, index, stats, folder, run


def test_unet_mim_trains_and_is_scored_against_the_mae_baselines(pretrained):
    store, index, stats, _, run = pretrained
    assert run.manifest["best_checkpoint"]
    family = get_family("unet_mim")
    metrics, values, figures = family.evaluate(store, index, stats, run.manifest, _params("unet_mim"), [])
    assert set(metrics["summary"]) == {"model", "band_mean", "neighbour_patch"}
    assert metrics["mask_ratio"] == 0.5 and "model/mse" in values
    assert set(figures) == set(family.plot_names)


def test_unet_seg_from_the_mim_checkpoint_starts_with_its_encoder(pretrained):
    store, index, stats, folder, run = pretrained
    family = get_family("unet_seg")
    params = _params("unet_seg", {"model": {"decoder_channels": [16, 8], "checkpoint": run.manifest["run_dir"]}})
    setup = family.prepare(store, index, stats, params)
    assert setup.extra["label_space"].num_classes == 2 and setup.model_kwargs["checkpoint"].endswith(".pt")
    seg = family.build_model(setup.model_kwargs)
    mim = get_family("unet_mim").build_model(run.manifest["model_kwargs"])
    from spectral_training.training import load_checkpoint
    load_checkpoint(setup.model_kwargs["checkpoint"], mim)
    for name, value in mim.unet.encoder.state_dict().items():
        assert torch.equal(seg.encoder.state_dict()[name], value), name
    assert not torch.equal(seg.head.weight[:1], mim.unet.head.weight[:1])  # the head is new


def test_unet_seg_trains_and_reports_iou_per_class(pretrained):
    store, index, stats, folder, _ = pretrained
    family = get_family("unet_seg")
    params = _params("unet_seg")
    setup = family.prepare(store, index, stats, params)
    run = train_family(family, setup, params, folder / "models", device="cpu")
    assert "val_miou" in run.result.history[-1]
    report, values, figures = family.evaluate(store, index, stats, run.manifest, params, run.result.history)
    assert set(report["per_class"]) == {"class_1", "class_2"} and report["init"] == "scratch"
    assert 0.0 <= values["mean_iou"] <= 1.0 and set(figures) == set(family.plot_names)


def test_the_segmentation_loss_ignores_unlabelled_pixels():
    logits = torch.zeros(1, 2, 2, 2, requires_grad=True)
    target = torch.tensor([[[0, -1], [-1, -1]]])
    loss = segmentation_loss(logits, target, None)
    loss.backward()
    assert loss.item() == pytest.approx(np.log(2))
    assert (logits.grad[..., 0, 1] == 0).all() and (logits.grad[..., 1, :] == 0).all()
    assert (logits.grad[..., 0, 0] != 0).all()
    assert segmentation_loss(logits, torch.full((1, 2, 2), -1), None).item() == 0.0  # nothing labelled: 0, not NaN
