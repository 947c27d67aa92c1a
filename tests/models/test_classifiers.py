"""Classifiers by name (timm, our small CNNs, torchvision ViT), input sizes and weights files."""

from __future__ import annotations

import importlib
import logging
import warnings

import pytest
import timm
import timm.optim
import torch
import torchvision
from safetensors.torch import save_file
from timm.models import adapt_input_conv

from spectral_training.models import small_cnns
from spectral_training.models.classifiers import TORCHVISION_VITS, build_classifier, model_input_size
from spectral_training.models.input_adaptation import wavelength_channel_map

LOGGER = "spectral_training.models"
TINY_TV_VIT = {"patch_size": 8, "num_layers": 2, "num_heads": 2, "hidden_dim": 32, "mlp_dim": 64}
TINY_SWIN = {"embed_dim": 24, "depths": (1, 1, 1, 1), "num_heads": (1, 1, 1, 1)}
S2_WAVELENGTHS = [443, 490, 560, 665, 705, 740, 783, 842, 865, 945, 1375, 1610, 2190]

# name, image_size, model_kwargs: one small member of every family we support
FAMILIES = [
    ("resnet18", 32, {}),
    ("efficientnet_b3", 32, {}),
    ("mobilenetv3_large_100", 32, {}),
    ("convnext_tiny", 32, {"depths": (1, 1, 1, 1), "dims": (16, 32, 64, 128)}),
    ("vit_tiny_patch16_224", 32, {"patch_size": 8, "depth": 2}),
    ("swin_tiny_patch4_window7_224", 32, TINY_SWIN),
    ("eva02_tiny_patch14_224", 28, {"depth": 1}),
    ("satellite_cnn", 32, {}),
    ("flood_cnn", 32, {}),
    ("tv_vit_b_16", 32, TINY_TV_VIT),
]


@pytest.fixture(scope="module")
def resnet18_rgb(tmp_path_factory) -> tuple[dict[str, torch.Tensor], object]:
    """A random 3-band, 10-class resnet18 state dict saved as .pth in a temporary folder."""
    torch.manual_seed(0)
    state = timm.create_model("resnet18", pretrained=False, num_classes=10, in_chans=3).state_dict()
    path = tmp_path_factory.mktemp("weights") / "resnet18_rgb.pth"
    torch.save(state, path)
    return state, path


@pytest.mark.parametrize(("name", "size", "kwargs"), FAMILIES, ids=[f[0] for f in FAMILIES])
def test_every_family_gives_logits_for_five_bands(name, size, kwargs):
    model = build_classifier(name, num_classes=3, in_chans=5, image_size=size, model_kwargs=kwargs).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 5, size, size))
    assert logits.shape == (2, 3)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize(("name", "classes", "low", "high"), [("satellite_cnn", 10, 100_000, 300_000), ("flood_cnn", 2, 5_000, 60_000)])
def test_small_cnns_through_timm_factory(name, classes, low, high):
    model = timm.create_model(name, pretrained=False, num_classes=classes, in_chans=13)
    assert model(torch.randn(2, 13, 16, 16)).shape == (2, classes)
    assert low <= sum(p.numel() for p in model.parameters()) <= high
    assert model.forward_features(torch.randn(1, 13, 16, 16)).shape[1] == model.num_features
    default_size = {"satellite_cnn": (13, 64, 64), "flood_cnn": (4, 32, 32)}[name]  # the registered cfg
    assert timm.data.resolve_data_config({}, model=model)["input_size"] == default_size
    model.reset_classifier(7)
    assert model.get_classifier().out_features == 7 and model(torch.randn(1, 13, 16, 16)).shape == (1, 7)


def test_flood_cnn_defaults_to_two_logits():
    assert timm.create_model("flood_cnn", pretrained=False, in_chans=4)(torch.randn(1, 4, 32, 32)).shape == (1, 2)


def test_small_cnn_layer_decay_gives_one_scale_per_stage():
    model = timm.create_model("satellite_cnn", pretrained=False, num_classes=10, in_chans=4)
    groups = timm.optim.create_optimizer_v2(model, "adamw", lr=1e-3, layer_decay=0.65).param_groups
    assert len({round(g["lr_scale"], 6) for g in groups}) == 5  # stem, 3 stages, head


def test_registration_is_idempotent_on_reimport():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        importlib.reload(small_cnns)
    assert timm.list_models("satellite_cnn") == ["satellite_cnn"]
    assert timm.create_model("flood_cnn", pretrained=False, in_chans=3)(torch.randn(1, 3, 8, 8)).shape == (1, 2)


def test_model_input_size_of_eva02_base_without_allocating():
    with torch.device("meta"):
        model = build_classifier("eva02_base_patch14_224", num_classes=3, in_chans=5)
    assert model_input_size(model) == 224


def test_model_input_size_follows_image_size_and_data_config():
    vit = build_classifier("vit_tiny_patch16_224", 3, 5, image_size=32, model_kwargs={"patch_size": 8, "depth": 1})
    assert model_input_size(vit) == 32
    assert timm.data.resolve_data_config({}, model=vit)["input_size"] == (5, 32, 32)
    assert model_input_size(build_classifier("tv_vit_b_16", 3, 5, 32, model_kwargs=TINY_TV_VIT)) == 32


@pytest.mark.parametrize("name", ["resnet18", "satellite_cnn"])
def test_model_input_size_is_none_for_cnns(name):
    assert model_input_size(build_classifier(name, 3, 5)) is None


def test_weights_file_adapts_first_conv_and_resets_head(resnet18_rgb, caplog):
    state, path = resnet18_rgb
    with caplog.at_level(logging.INFO, logger=LOGGER):
        model = build_classifier("resnet18", num_classes=4, in_chans=13, weights=path, weights_adaptation="timm")
    assert model.conv1.weight.shape[1] == 13
    torch.testing.assert_close(model.conv1.weight, adapt_input_conv(13, state["conv1.weight"]))
    torch.testing.assert_close(model.layer1[0].conv1.weight, state["layer1.0.conv1.weight"])
    assert model.fc.weight.shape == (4, 512)
    assert "conv1.weight from 3 to 13 channels" in caplog.text and "'timm'" in caplog.text
    assert "head re-initialised" in caplog.text and "fc.weight" in caplog.text


def test_wavelength_mapping_sends_660_nm_to_red():
    assert wavelength_channel_map([660]) == [0]  # default file channels R 640, G 550, B 465
    assert wavelength_channel_map([443, 560, 842]) == [2, 1, 0]


def test_wavelength_adaptation_copies_the_nearest_rgb_channel(resnet18_rgb, caplog):
    state, path = resnet18_rgb
    with caplog.at_level(logging.INFO, logger=LOGGER):
        model = build_classifier("resnet18", 4, 13, weights=path, band_wavelengths_nm=S2_WAVELENGTHS)  # auto
    rgb = state["conv1.weight"]
    torch.testing.assert_close(model.conv1.weight[:, 3], rgb[:, 0] * 3 / 13)  # B4 665 nm <- red
    torch.testing.assert_close(model.conv1.weight[:, 2], rgb[:, 1] * 3 / 13)  # B3 560 nm <- green
    torch.testing.assert_close(model.conv1.weight[:, 0], rgb[:, 2] * 3 / 13)  # B1 443 nm <- blue
    assert "'wavelength'" in caplog.text


def test_wavelength_adaptation_without_wavelengths_names_the_field(resnet18_rgb):
    with pytest.raises(ValueError, match="band_wavelengths_nm"):
        build_classifier("resnet18", 4, 13, weights=resnet18_rgb[1], weights_adaptation="wavelength")


@pytest.mark.parametrize("wrap", ["model", "state_dict", "safetensors"])
def test_wrapped_and_safetensors_files_load(resnet18_rgb, tmp_path, wrap):
    state = resnet18_rgb[0]
    if wrap == "safetensors":
        path = tmp_path / "w.safetensors"
        save_file(state, str(path))
    else:
        path = tmp_path / "w.pt"
        torch.save({wrap: state, "epoch": 3}, path)
    model = build_classifier("resnet18", 10, 3, weights=path)
    torch.testing.assert_close(model.fc.weight, state["fc.weight"])  # same class count: head kept


def test_weights_of_another_architecture_name_the_missing_keys(resnet18_rgb):
    with pytest.raises(ValueError, match="keys the file lacks: layer1.2"):
        build_classifier("resnet34", 4, 3, weights=resnet18_rgb[1])


@pytest.mark.filterwarnings("ignore::UserWarning:timm.layers.interpolate")  # timm's Swin table resize, torch 2.14
@pytest.mark.parametrize(
    ("name", "file_size", "kwargs"),
    [("vit_tiny_patch16_224", 64, {"patch_size": 8, "depth": 1}), ("swin_tiny_patch4_window7_224", 224, TINY_SWIN)],
)
def test_timm_weights_from_another_image_size_load(tmp_path, name, file_size, kwargs):
    source = build_classifier(name, 10, 3, file_size, model_kwargs=kwargs)  # timm's filter resamples positions
    torch.save(source.state_dict(), tmp_path / "w.pth")
    model = build_classifier(name, 3, 5, 32, weights=tmp_path / "w.pth", model_kwargs=kwargs).eval()
    assert model(torch.randn(1, 5, 32, 32)).shape == (1, 3)


def test_tv_vit_weights_resample_positions_for_another_size(tmp_path):
    source = build_classifier("tv_vit_b_16", 10, 3, 64, model_kwargs=TINY_TV_VIT)
    torch.save(source.state_dict(), tmp_path / "tv.pth")
    model = build_classifier("tv_vit_b_16", 4, 5, 32, weights=tmp_path / "tv.pth", model_kwargs=TINY_TV_VIT)
    assert model.encoder.pos_embedding.shape == (1, 17, 32)
    torch.testing.assert_close(model.class_token, source.class_token)
    assert model(torch.randn(1, 5, 32, 32)).shape == (1, 4)


def test_unknown_name_suggests_close_match():
    with pytest.raises(ValueError, match="resnet50"):
        build_classifier("resnet5O", 3, 5)
    with pytest.raises(ValueError, match="tv_vit_b_16"):
        build_classifier("tv_vit_b16", 3, 5)


@pytest.mark.parametrize("name", ["vit_tiny_patch16_224", "swin_tiny_patch4_window7_224", "tv_vit_b_16"])
def test_image_size_off_the_patch_grid_lists_sizes_that_work(name):
    with pytest.raises(ValueError, match=r"image_size=30 .* multiple of"):
        build_classifier(name, 3, 5, image_size=30)


def test_tv_vit_layer_decay_gives_distinct_lr_scales():
    model = build_classifier("tv_vit_b_16", 3, 5, 32, model_kwargs=TINY_TV_VIT)
    groups = timm.optim.create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.05, layer_decay=0.65).param_groups
    scales = sorted({round(g["lr_scale"], 6) for g in groups})
    assert len(scales) == TINY_TV_VIT["num_layers"] + 2  # stem, each encoder layer, head
    no_decay = {id(p) for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    assert id(model.class_token) in no_decay and id(model.encoder.pos_embedding) in no_decay


def test_tv_vit_b_16_matches_torchvision_architecture():
    with torch.device("meta"):
        ours = build_classifier("tv_vit_b_16", 1000, 3, 224)
        ref = torchvision.models.vit_b_16(weights=None, image_size=224, num_classes=1000)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    assert set(TORCHVISION_VITS) >= {"tv_vit_b_16"}


def test_model_kwargs_may_not_repeat_arguments():
    with pytest.raises(ValueError, match="img_size"):
        build_classifier("vit_tiny_patch16_224", 3, 5, model_kwargs={"img_size": 32})
