"""Transform validation: the checks that stop a run before its first training step."""

import numpy as np
import pandas as pd
import pytest
import torch

from spectral_training.cubes.dataset import NormalisedTileDataset
from spectral_training.cubes.store import CubeStore, TileBatch
from spectral_training.cubes.transforms import build_transforms
from spectral_training.models import build_mae
from spectral_training.training.preflight import ValidationFailed, check_shapes, require_passed, validate_setup

BANDS, TILE = 6, 16


def _stats(std=1.0):
    return {"mean": [0.5] * BANDS, "std": [std] * BANDS}


def _tiny_mae():
    return build_mae("tiny", BANDS, TILE, spatial_patch=4, spectral_patch=3, embed_dim=32, depth=1, num_heads=2,
                     decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2)


@pytest.fixture
def datasets(tmp_path):
    store = CubeStore(tmp_path / "c.h5")
    store.create(num_bands=BANDS, tile_size=TILE, band_names=None, wavelengths_nm=None)
    values = np.random.default_rng(0).random((6, BANDS, TILE, TILE)).astype("f4")
    store.append([TileBatch(cubes=values, sample_ids=[f"s{i}" for i in range(6)], source_file="x",
                            windows=np.zeros((6, 4), np.int32), labels=np.full(6, -1))])
    index = pd.DataFrame({"store_index": range(6), "sample_id": [f"s{i}" for i in range(6)], "label": [-1] * 6,
                          "split": ["train"] * 4 + ["val"] * 2})
    t = build_transforms([], _stats(), where="transforms.train")
    e = build_transforms([], _stats(), where="transforms.eval")
    return NormalisedTileDataset(store, index, "train", t), NormalisedTileDataset(store, index, "val", e), t, e


def test_resize_to_448_feeding_a_224_model_is_caught_naming_both_parameters():
    train = build_transforms([{"resize": 448}], _stats(), where="transforms.train")
    eval_ = build_transforms([{"resize": 224}], _stats(), where="transforms.eval")
    checks = check_shapes(500, BANDS, train, eval_, model_image_size=224, model_bands=BANDS)
    failed = [c for c in checks if not c["passed"]]
    assert len(failed) == 1
    assert "transforms.train[0].resize=448" in failed[0]["detail"] and "model.image_size is 224" in failed[0]["detail"]


def test_band_count_mismatch_is_caught():
    t = build_transforms([], _stats(), where="transforms.train")
    checks = check_shapes(16, 6, t, t, model_image_size=16, model_bands=7)
    assert [c["name"] for c in checks if not c["passed"]] == ["shape:bands"]


def test_a_good_setup_passes_every_check_and_the_loss_falls(datasets):
    train_set, val_set, t, e = datasets
    report = validate_setup(train_set, val_set, t, e, tile_size=TILE, store_bands=BANDS, model_builder=_tiny_mae,
                            model_image_size=TILE, model_bands=BANDS, band_names=[f"b{i}" for i in range(BANDS)],
                            steps=5, lr=3e-3)
    assert report["passed"], report["failed"]
    losses = next(c for c in report["checks"] if c["name"] == "loss_decreases")["losses"]
    assert losses[-1] < losses[0]


def test_zero_std_bands_are_flagged_as_a_warning(datasets):
    train_set, val_set, _, e = datasets
    stats = {"mean": [0.5] * BANDS, "std": [1.0] * (BANDS - 1) + [0.0]}
    t = build_transforms([], stats, where="transforms.train")
    report = validate_setup(train_set, val_set, t, e, tile_size=TILE, store_bands=BANDS, model_builder=_tiny_mae,
                            model_image_size=TILE, model_bands=BANDS, band_names=[f"b{i}" for i in range(BANDS)])
    assert report["zero_std_bands"] == ["b5"]


def test_a_model_that_yields_nan_fails_forward_backward(datasets):
    train_set, val_set, t, e = datasets

    class NaNModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))

        def forward(self, x, generator=None):
            return {"loss": (self.w * x.sum()) * float("nan")}

    report = validate_setup(train_set, val_set, t, e, tile_size=TILE, store_bands=BANDS, model_builder=NaNModel,
                            model_image_size=TILE, model_bands=BANDS, band_names=[])
    assert not report["passed"] and any("loss nan" in f for f in report["failed"])


def test_preflight_runs_the_given_forward_fn_on_loader_like_batches(datasets):
    train_set, val_set, t, e = datasets
    batches, draws = [], []

    def forward(model, batch):
        # a family that needs labels, with randomness of its own (e.g. mixup) from the global RNG
        batches.append(batch)
        draws.append(torch.rand(()).item())
        assert batch["label"].shape == batch["cube"].shape[:1]
        return model(batch["cube"])

    report = validate_setup(train_set, val_set, t, e, tile_size=TILE, store_bands=BANDS, model_builder=_tiny_mae,
                            model_image_size=TILE, model_bands=BANDS, band_names=[f"b{i}" for i in range(BANDS)],
                            forward_fn=forward, steps=3, lr=3e-3)

    assert report["passed"], report["failed"]
    assert len(batches) == 1 + 4  # forward_backward, then steps + 1 forwards
    assert set(batches[0]) == {"cube", "label", "sample_id", "index"}  # default_collate of dataset items
    assert batches[0]["sample_id"] == ["s0", "s1", "s2", "s3"]
    assert len(set(draws)) == 1  # the global RNG is re-seeded before every forward


def test_preflight_reports_a_forward_fn_that_breaks_the_contract(datasets):
    train_set, val_set, t, e = datasets
    report = validate_setup(train_set, val_set, t, e, tile_size=TILE, store_bands=BANDS, model_builder=_tiny_mae,
                            model_image_size=TILE, model_bands=BANDS, band_names=[],
                            forward_fn=lambda model, batch: model(batch["cube"])["loss"])
    assert not report["passed"]
    assert any("ContractError" in f and "'loss'" in f for f in report["failed"])


def test_shape_messages_name_the_image_size_parameter_given(datasets):
    train_set, val_set, _, e = datasets
    t = build_transforms([{"resize": 8}], _stats(), where="transforms.train")
    report = validate_setup(train_set, val_set, t, e, tile_size=TILE, store_bands=BANDS, model_builder=_tiny_mae,
                            model_image_size=TILE, model_bands=BANDS, band_names=[],
                            image_size_param="vit.model.image_size")
    assert any("vit.model.image_size is 16" in f for f in report["failed"])


def test_training_refuses_a_failed_report_unless_skip_validation_is_set(caplog):
    failed = {"passed": False, "failed": ["transforms.train outputs 448 px"]}
    with pytest.raises(ValidationFailed, match="448 px.*skip_validation=true"):
        require_passed(failed, skip_validation=False, dataset="demo")
    require_passed(failed, skip_validation=True, dataset="demo")
    assert "TRAINING ANYWAY" in caplog.text
