"""unet_temporal: the two baselines checked by hand, the loss on the held-out date's valid pixels
only, a model blind to the held-out date, a falling loss, and the family trained and scored on a
tiny series store through the shared runner."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spectral_training.cubes.ingest import build_sample_index
from spectral_training.cubes.stats import compute_band_stats
from spectral_training.cubes.store import CubeStore, TileBatch
from spectral_training.families import get_family, resolve
from spectral_training.families.params import FamilyParamsError
from spectral_training.families.runs import train_family
from spectral_training.families.unet.temporal import temporal_forward
from spectral_training.models.unet_temporal import TemporalUNet, linear_interpolation, persistence
from family_data import family_layers

ENCODER = "mobilenetv3_small_050"  # any timm features_only model works; this one trains a step in ~50 ms
TINY = {"model": {"encoder": ENCODER, "decoder_channels": [8]}, "loader": {"batch_size": 8, "num_workers": 0},
        "train": {"epochs": 1, "progress": False, "checkpoint_every_steps": None, "warmup_epochs": 0},
        "evaluation": {"show_progress": False, "batch_size": 8, "plot_samples": 2}}


def _batch(values, days, valid, target):
    """Tensors of one series per row: values (B, T, C, H, W), days (B, T) with 0 = padding."""
    days = torch.as_tensor(days)
    return (torch.as_tensor(values, dtype=torch.float32), days, days > 0, torch.as_tensor(valid, dtype=torch.bool),
            torch.as_tensor(target))


def test_persistence_takes_each_pixels_nearest_valid_date():
    # dates 10, 20, 40, 50 (+ padding); hold out 40. Date d holds the value d in every band.
    days = [[10, 20, 40, 50, 0]]
    values = np.array(days, np.float32)[:, :, None, None, None] * np.ones((1, 5, 2, 1, 4), np.float32)
    valid = np.ones((1, 5, 1, 4), bool)
    valid[0, 4] = False  # padding
    valid[0, 3, 0, 1] = False  # pixel 1: 50 is cloudy -> 20 (gap 20) beats 10
    valid[0, [1, 3], 0, 2] = False  # pixel 2: only 10 is left
    valid[0, [0, 1, 3], 0, 3] = False  # pixel 3: nothing but the held-out date itself
    values *= valid[:, :, None]
    pred = persistence(*_batch(values, days, valid, [2]))
    assert pred[0, :, 0].tolist() == [[50.0, 20.0, 10.0, 0.0]] * 2  # 0 = the train mean when nothing is valid


def test_persistence_breaks_a_tie_towards_the_earlier_date():
    days = [[10, 20, 30]]
    values = np.array([10.0, 20.0, 30.0], np.float32).reshape(1, 3, 1, 1, 1)
    pred = persistence(*_batch(values, days, np.ones((1, 3, 1, 1), bool), [1]))
    assert pred.item() == 10.0


def test_linear_interpolation_is_exact_on_a_linear_series():
    rng = np.random.default_rng(0)
    days = [[15, 40, 77, 120, 160, 201]]
    slope, offset = rng.normal(size=(1, 1, 3, 4, 4)), rng.normal(size=(1, 1, 3, 4, 4))
    values = (offset + slope * np.array(days, np.float64)[:, :, None, None, None] / 100).astype(np.float32)
    valid = rng.random((1, 6, 4, 4)) > 0.4
    valid[0, [0, 5]] = True  # every pixel has a valid date on each side of any interior target
    for target in (2, 3):
        pred = linear_interpolation(*_batch(values * valid[:, :, None], days, valid, [target]))
        np.testing.assert_allclose(pred[0].numpy(), values[0, target], rtol=1e-5, atol=1e-5)


def test_linear_interpolation_falls_back_to_persistence_with_one_side():
    days = [[10, 20, 30]]
    values = np.array([1.0, 2.0, 7.0], np.float32).reshape(1, 3, 1, 1, 1)
    assert linear_interpolation(*_batch(values, days, np.ones((1, 3, 1, 1), bool), [2])).item() == 2.0


@pytest.fixture(scope="module")
def model_batch():
    torch.manual_seed(0)
    b, t, c, s = 4, 6, 3, 16
    days = torch.tensor([[20, 60, 100, 140, 180, 220]] * b)
    season = torch.sin(days.float() / 70)[:, :, None, None, None]
    valid = torch.rand(b, t, s, s) > 0.25
    values = (season * torch.randn(1, 1, c, s, s) + 0.1 * torch.randn(b, t, c, s, s)) * valid[:, :, None]
    batch = {"cube": values, "day_of_year": days, "date_mask": torch.ones(b, t, dtype=torch.bool), "valid": valid}
    model = TemporalUNet(ENCODER, c, s, context_dates=2, decoder_channels=[8])
    return model, batch, torch.tensor([1, 2, 3, 4])


def test_the_loss_counts_only_valid_pixels_of_the_held_out_date(model_batch):
    model, batch, target = model_batch
    model.eval()
    with torch.no_grad():
        before = temporal_forward(model, batch, target)["loss"]
        changed = {**batch, "cube": batch["cube"].clone()}
        rows = torch.arange(4)
        invalid = ~batch["valid"][rows, target]  # (B, H, W)
        frame = changed["cube"][rows, target]
        changed["cube"][rows, target] = torch.where(invalid[:, None], frame + 100.0, frame)
        assert temporal_forward(model, changed, target)["loss"] == before
        changed["cube"][0, 1, 0][batch["valid"][0, 1]] += 1.0  # a valid pixel of the held-out date does count
        assert temporal_forward(model, changed, target)["loss"] != before


def test_the_model_never_reads_the_held_out_date(model_batch):
    model, batch, target = model_batch
    model.eval()
    changed = {**batch, "cube": batch["cube"].clone(), "valid": batch["valid"].clone()}
    rows = torch.arange(4)
    changed["cube"][rows, target] = torch.randn_like(changed["cube"][rows, target])
    changed["valid"][rows, target] = ~changed["valid"][rows, target]
    with torch.no_grad():
        one = model(batch["cube"], batch["day_of_year"], batch["date_mask"], batch["valid"], target)["pred"]
        two = model(changed["cube"], changed["day_of_year"], changed["date_mask"], changed["valid"], target)["pred"]
    assert torch.equal(one, two)


def test_the_loss_falls_below_linear_interpolation_on_a_seasonal_series(model_batch):
    _, batch, target = model_batch
    torch.manual_seed(0)
    model = TemporalUNet(ENCODER, 3, 16, context_dates=2, decoder_channels=[8])
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(10):
        optimizer.zero_grad()
        out = temporal_forward(model, batch, target)
        out["loss"].backward()
        optimizer.step()
        losses.append(out["loss"].item())
    start = out["loss_parts"]["linear_interpolation_mse"].item()
    assert losses[0] == pytest.approx(start)  # the residual model starts at the interpolation
    assert losses[-1] < 0.8 * losses[0]


def _series_store(folder, n=16, t=6, bands=3, tile=16):
    rng = np.random.default_rng(0)
    days = np.tile(np.array([30, 70, 110, 150, 190, 230]), (n, 1))
    season = np.sin(days / 70.0)[:, :, None, None, None]
    noise = 0.05 * rng.normal(size=(n, t, bands, tile, tile))
    series = 1.0 + season * rng.uniform(0.5, 1.5, (n, 1, bands, 1, 1)) + noise
    valid = rng.random((n, t, tile, tile)) > 0.2
    store = CubeStore(folder / "cubes.h5")
    store.create(num_bands=bands, tile_size=tile, band_names=[f"b{i}" for i in range(bands)],
                 wavelengths_nm=[490.0, 560.0, 665.0], sample_layout="series", max_seq_len=t)
    store.append([TileBatch(cubes=series.astype("f4"), sample_ids=[f"f@{i},0" for i in range(n)], source_file="f",
                            windows=np.zeros((n, 4), np.int32), labels=np.full(n, -1, np.int64),
                            day_of_year=days.astype(np.int16), date_mask=np.ones((n, t), bool), valid=valid)])
    index = build_sample_index(store, {"train": 0.5, "val": 0.25, "test": 0.25})
    train = index.loc[index["split"] == "train", "store_index"].to_numpy()
    return store, index, compute_band_stats(store, train, show_progress=False)


def _params(overrides=None):
    block, defaults = family_layers("unet_temporal", {**TINY, **(overrides or {})})
    return resolve("unet_temporal", block, defaults[0])


def test_the_family_trains_and_is_scored_against_both_baselines_on_the_same_dates(tmp_path):
    store, index, stats = _series_store(tmp_path)
    family = get_family("unet_temporal")
    params = _params()
    setup = family.prepare(store, index, stats, params)
    run = train_family(family, setup, params, tmp_path / "models", device="cpu")
    report, values, figures = family.evaluate(store, index, stats, run.manifest, params, run.result.history)
    assert set(report["summary"]) == {"model", "persistence", "linear_interpolation"}
    assert report["num_series"] == len(report["held_out"]) == int((index["split"] == "test").sum())
    assert all(0 < d["date_index"] < 5 for d in report["held_out"])  # interior dates only
    assert {"model/mse", "persistence/mae", "linear_interpolation/psnr"} <= set(values)
    assert set(figures) == set(family.plot_names)


def test_a_cube_store_is_refused_naming_the_series_dataset(tmp_path):
    store = CubeStore(tmp_path / "cubes.h5")
    store.create(num_bands=3, tile_size=16, band_names=None, wavelengths_nm=None)
    with pytest.raises(FamilyParamsError, match="series dataset"):
        get_family("unet_temporal").prepare(store, None, {}, _params())
