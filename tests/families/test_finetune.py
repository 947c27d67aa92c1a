"""Fine-tuning from our own MAE checkpoint: loads its encoder, checks the bands, trains."""

import pytest
from family_data import family_layers, labelled_store, tiny_overrides

from spectral_training import families
from spectral_training.families.checks import validate_family
from spectral_training.families.runs import train_family

TINY_MAE = {"model": {"image_size": 16, "spatial_patch": 4, "spectral_patch": 3, "depth": 2, "embed_dim": 32,
                      "num_heads": 2, "decoder_embed_dim": 32, "decoder_depth": 1, "decoder_num_heads": 2},
            "train": {"epochs": 1, "progress": False, "warmup_epochs": 0}, "loader": {"batch_size": 8}}
VALIDATION = {"batch_size": 8, "steps": 5, "lr": 1e-3, "seed": 0}


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A tiny MAE pretrained (one epoch) on a 6-band store: its manifest and the store."""
    folder = tmp_path_factory.mktemp("mae")
    store, index, stats = labelled_store(folder, wavelengths=[450, 500, 550, 600, 650, 700])
    mae = families.get_family("mae")
    block, defaults = family_layers("mae", TINY_MAE)
    params = families.resolve("mae", block, *defaults)
    run = train_family(mae, mae.prepare(store, index, stats, params), params, folder / "models")
    return run.manifest, (store, index, stats)


def _finetune_params(manifest, **model):
    block, defaults = family_layers("finetune", tiny_overrides("finetune"))
    block["model"].update({"checkpoint": manifest["run_dir"], **model})
    return families.resolve("finetune", block, *defaults, pipeline="finetune")


@pytest.mark.parametrize("mode", ["full", "linear_probe"])
def test_finetune_loads_the_mae_encoder_and_trains_to_a_falling_loss(pretrained, mode):
    manifest, (store, index, stats) = pretrained
    params = _finetune_params(manifest, mode=mode)
    if mode == "linear_probe":
        params["train"]["layer_decay"] = None
    report = validate_family(families.get_family("finetune"), store, index, stats, params, VALIDATION)
    assert report["passed"], report["failed"]


def test_finetune_normalises_with_the_checkpoints_band_stats(pretrained):
    manifest, (store, index, stats) = pretrained
    family = families.get_family("finetune")
    setup = family.prepare(store, index, stats, _finetune_params(manifest))
    assert setup.metadata["mae_band_names"] == setup.metadata["band_names"]
    assert setup.model_kwargs["image_size"] == 16 and setup.model_kwargs["mode"] == "full"


def test_a_dataset_with_other_bands_is_an_error_naming_both_lists(pretrained, tmp_path):
    manifest, _ = pretrained
    store, index, stats = labelled_store(tmp_path, band_names=[f"B{i}" for i in range(6)])
    with pytest.raises(ValueError) as error:
        families.get_family("finetune").prepare(store, index, stats, _finetune_params(manifest))
    assert "band_000" in str(error.value) and "B0" in str(error.value) and "band_mapping" in str(error.value)


def test_a_band_mapping_fixes_the_mismatch(pretrained, tmp_path):
    manifest, _ = pretrained
    store, index, stats = labelled_store(tmp_path, band_names=[f"B{i}" for i in range(6)])
    mapping = {f"band_{i:03d}": f"B{i}" for i in range(6)}
    setup = families.get_family("finetune").prepare(store, index, stats, _finetune_params(manifest, band_mapping=mapping))
    assert setup.model_kwargs["band_index"] in (None, list(range(6)))


def test_a_missing_checkpoint_says_how_to_make_one(tmp_path, pretrained):
    _, (store, index, stats) = pretrained
    params = _finetune_params({"run_dir": str(tmp_path / "nothing")})
    with pytest.raises(FileNotFoundError, match="mae_pretrain"):
        families.get_family("finetune").prepare(store, index, stats, params)
