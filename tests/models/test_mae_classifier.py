"""Classifiers from the encoder of a pretrained spectral MAE: weights, sizes, modes, bands, keys.

The checkpoint is a real one: a tiny MAE (6 bands, 16 px, 4x4x3 patches, depth 2, width 32)
trained by ``fit`` for one epoch on random cubes, with EMA, and the metadata the MAE
pretraining stores.
"""

from __future__ import annotations

import pytest
import timm.optim
import torch

from spectral_training.models import (
    MAEEncoderClassifier,
    build_mae,
    checkpoint_band_stats_for_dataset,
    interpolate_pos_embed,
    mae_classifier_from_checkpoint,
)
from spectral_training.training import TrainConfig, atomic_torch_save, fit, load_checkpoint, make_loader

BANDS = ["B1", "B2", "B3", "B4", "B5", "B6"]
WAVELENGTHS = [450.0, 500.0, 550.0, 650.0, 750.0, 850.0]
MODEL_KWARGS = dict(
    variant="tiny", num_bands=6, image_size=16, spatial_patch=4, spectral_patch=3, embed_dim=32, depth=2,
    num_heads=2, decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2, wavelengths_nm=WAVELENGTHS,
)
MEAN, STD = [10.0, 20.0, 30.0, 40.0, 50.0, 60.0], [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]


def tiny_mae(image_size=16, **overrides):
    kwargs = {**MODEL_KWARGS, "image_size": image_size, **overrides}
    return build_mae(kwargs.pop("variant"), kwargs.pop("num_bands"), kwargs.pop("image_size"), **kwargs)


class Cubes(torch.utils.data.Dataset):
    def __init__(self, count):
        self.cubes = torch.randn(count, 6, 16, 16, generator=torch.Generator().manual_seed(0))

    def __len__(self):
        return len(self.cubes)

    def __getitem__(self, i):
        return {"cube": self.cubes[i], "sample_id": f"s{i}"}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """last.pt of a one-epoch MAE pretraining run (2 steps, EMA on)."""
    run_dir = tmp_path_factory.mktemp("mae_run")
    torch.manual_seed(0)
    model = tiny_mae()
    config = TrainConfig.from_dict(dict(epochs=1, lr=1e-3, warmup_steps=1, amp="off", progress=False, ema=True,
                                        checkpoint_every_steps=None, seed=0), source="test")
    metadata = {
        "family": "mae", "model_kwargs": MODEL_KWARGS, "band_names": BANDS, "wavelengths_nm": WAVELENGTHS,
        "band_stats": {"mean": MEAN, "std": STD, "split": "train"}, "transforms": {"train": [], "eval": []},
    }
    fit(model, make_loader(Cubes(8), 4, shuffle=True, seed=0), None, config, run_dir=run_dir, metadata=metadata,
        device="cpu")
    return run_dir / "last.pt"


@pytest.fixture
def cube():
    return torch.randn(2, 6, 16, 16, generator=torch.Generator().manual_seed(1))


def save_modified(ckpt, tmp_path, change):
    checkpoint = load_checkpoint(ckpt)
    change(checkpoint)
    path = tmp_path / "modified.pt"
    atomic_torch_save(checkpoint, path)
    return path


def test_logits_and_features_have_the_documented_shapes(ckpt, cube):
    model, info = mae_classifier_from_checkpoint(ckpt, num_classes=5)
    assert model(cube).shape == (2, 5)
    assert model.forward_features(cube).shape == (2, 32)
    assert info["missing_keys"] == ["head.weight", "head.bias"]
    assert info["unexpected_keys"] and all(k.startswith(("decoder", "mask_token")) for k in info["unexpected_keys"])
    assert info["band_names"] == BANDS and info["wavelengths_nm"] == WAVELENGTHS and info["band_index"] is None
    assert info["band_stats"] == {"mean": MEAN, "std": STD}  # no mapping: the checkpoint's, as stored
    assert not any(name.startswith("decoder") for name, _ in model.named_parameters())


def test_encoder_weights_are_the_checkpoints(ckpt):
    checkpoint = load_checkpoint(ckpt)
    model, _ = mae_classifier_from_checkpoint(ckpt, num_classes=3)
    assert torch.equal(model.blocks[1].attn.qkv.weight, checkpoint["model"]["blocks.1.attn.qkv.weight"])
    assert torch.equal(model.patch_embed.weight, checkpoint["model"]["patch_embed.weight"])
    ema_model, info = mae_classifier_from_checkpoint(ckpt, num_classes=3, use_ema=True)
    ema_weight = checkpoint["ema"]["module"]["blocks.1.attn.qkv.weight"]
    assert torch.equal(ema_model.blocks[1].attn.qkv.weight, ema_weight) and info["use_ema"]
    assert not torch.equal(ema_weight, checkpoint["model"]["blocks.1.attn.qkv.weight"])


def test_cls_feature_is_the_pretrained_encoders_unmasked_output(ckpt, cube):
    mae = tiny_mae()
    load_checkpoint(ckpt, mae)
    mae.eval()
    model, _ = mae_classifier_from_checkpoint(ckpt, num_classes=3, global_pool="cls")
    model.eval()
    latent, mask, _ = mae.forward_encoder(cube, mask_ratio=0.0)  # (B, 1 + L, D), nothing masked
    assert mask.sum() == 0
    torch.testing.assert_close(model.forward_features(cube), latent[:, 0])


@pytest.mark.parametrize("size", [24, 32])
def test_another_image_size_recomputes_the_fixed_position_code(ckpt, size):
    model, info = mae_classifier_from_checkpoint(ckpt, num_classes=3, image_size=size)
    assert model(torch.randn(2, 6, size, size)).shape == (2, 3)
    assert info["pos_embed"] == "recomputed" and info["image_size"] == (size, size)
    assert torch.equal(model.pos_embed, tiny_mae(image_size=size).pos_embed)


def test_an_image_size_the_patch_does_not_divide_names_sizes_that_fit(ckpt):
    with pytest.raises(ValueError, match=r"image_size: height 18 px .* spatial_patch=4 .* use 16 or 20 px"):
        mae_classifier_from_checkpoint(ckpt, num_classes=3, image_size=18)


def test_wrong_input_size_says_how_to_build_for_it(ckpt):
    model, _ = mae_classifier_from_checkpoint(ckpt, num_classes=3)
    with pytest.raises(ValueError, match=r"\(B, 6, 16, 16\).*got \(1, 6, 24, 24\).*image_size"):
        model(torch.randn(1, 6, 24, 24))


def test_a_learned_position_table_of_another_length_is_interpolated_per_band_group(ckpt, tmp_path):
    learned = torch.randn(1, 1 + 2 * 16, 32)
    path = save_modified(ckpt, tmp_path, lambda c: c["model"].__setitem__("pos_embed", learned))
    same, info = mae_classifier_from_checkpoint(path, num_classes=3)
    assert info["pos_embed"] == "loaded" and torch.equal(same.pos_embed, learned)
    bigger, info = mae_classifier_from_checkpoint(path, num_classes=3, image_size=32)
    assert info["pos_embed"] == "interpolated (4, 4) -> (8, 8)" and bigger.pos_embed.shape == (1, 1 + 2 * 64, 32)
    assert torch.equal(bigger.pos_embed[:, 0], learned[:, 0])  # cls row kept


def test_interpolation_never_mixes_band_groups():
    table = torch.cat([torch.zeros(1, 1, 8), torch.full((1, 16, 8), 1.0), torch.full((1, 16, 8), 2.0)], dim=1)
    out = interpolate_pos_embed(table, num_groups=2, old_grid=(4, 4), new_grid=(6, 6))  # (1, 1 + 2*36, 8)
    torch.testing.assert_close(out[0, 1:37], torch.full((36, 8), 1.0))
    torch.testing.assert_close(out[0, 37:], torch.full((36, 8), 2.0))


def test_linear_probe_trains_the_head_only_and_keeps_the_encoder_fixed(ckpt, cube):
    model, info = mae_classifier_from_checkpoint(ckpt, num_classes=3, mode="linear_probe", drop_path_rate=0.5)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {"head.weight", "head.bias"}
    assert set(info["missing_keys"]) == {"head.weight", "head.bias", "head_norm.running_mean", "head_norm.running_var"}
    model.train()
    assert model.head_norm.training and not model.blocks.training and not model.blocks[0].drop_path1.training
    assert torch.equal(model.forward_features(cube), model.forward_features(cube))  # drop-path 0.5 never fires
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    torch.nn.functional.cross_entropy(model(cube), torch.tensor([0, 2])).backward()
    optimizer.step()
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert "head.weight" in changed and all(k.startswith(("head.", "head_norm.")) for k in changed)


def test_full_mode_with_layer_decay_gets_one_lr_scale_per_block(ckpt):
    model, _ = mae_classifier_from_checkpoint(ckpt, num_classes=3)
    optimizer = timm.optim.create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.05, layer_decay=0.75)
    scale = {id(p): g["lr_scale"] for g in optimizer.param_groups for p in g["params"]}
    assert scale[id(model.patch_embed.weight)] == pytest.approx(0.75**3)  # embeddings: layer 0 of 4
    assert scale[id(model.cls_token)] == pytest.approx(0.75**3)
    assert scale[id(model.blocks[0].attn.qkv.weight)] == pytest.approx(0.75**2)
    assert scale[id(model.blocks[1].attn.qkv.weight)] == pytest.approx(0.75)
    assert scale[id(model.head.weight)] == 1.0
    assert id(model.pos_embed) not in scale  # fixed, not optimised
    assert all(p.requires_grad for n, p in model.named_parameters() if n != "pos_embed")


def test_a_band_list_mismatch_names_both_lists_and_the_fix(ckpt):
    dataset = ["B6", "B5", "B4", "B3", "B2", "B1"]
    with pytest.raises(ValueError) as error:
        mae_classifier_from_checkpoint(ckpt, num_classes=3, dataset_band_names=dataset)
    message = str(error.value)
    assert str(BANDS) in message and str(dataset) in message
    assert "position 0: checkpoint 'B1' vs dataset 'B6'" in message and "band_mapping=" in message


def test_a_mapping_dict_reorders_the_dataset_bands_into_the_checkpoints(ckpt):
    dataset = ["B3", "X", "B1", "B6", "B5", "B2", "B4"]  # another order, plus a band the model does not use
    model, info = mae_classifier_from_checkpoint(ckpt, num_classes=3, dataset_band_names=dataset,
                                                 band_mapping={b: b for b in BANDS})
    assert info["band_index"] == [2, 5, 0, 6, 4, 3] and info["input_band_names"] == dataset
    seen = []
    model.patch_embed.register_forward_hook(lambda mod, args, out: seen.append(args[0]))
    x = torch.arange(7.0)[None, :, None, None].expand(1, 7, 16, 16)  # dataset band j is constant j
    model(x)
    patches = seen[0].reshape(1, 2, 16, 3, 16)  # (B, G, N, s, p*p)
    seen_bands = patches[0, :, 0, :, 0].reshape(6)  # value of each checkpoint band
    assert seen_bands.tolist() == [2.0, 5.0, 0.0, 6.0, 4.0, 3.0]
    plain, _ = mae_classifier_from_checkpoint(ckpt, num_classes=3)
    plain.head.load_state_dict(model.head.state_dict())
    model.eval(), plain.eval()
    x = torch.randn(2, 7, 16, 16)
    torch.testing.assert_close(model(x), plain(x[:, [2, 5, 0, 6, 4, 3]]))


def test_band_stats_come_in_the_dataset_order(ckpt):
    dataset = ["B3", "X", "B1", "B6", "B5", "B2", "B4"]
    _, info = mae_classifier_from_checkpoint(ckpt, num_classes=3, dataset_band_names=dataset,
                                             band_mapping={b: b for b in BANDS})
    expected = {"mean": [30.0, 0.0, 10.0, 60.0, 50.0, 20.0, 40.0], "std": [3.0, 1.0, 1.0, 6.0, 5.0, 2.0, 4.0]}
    assert info["band_stats"] == expected == checkpoint_band_stats_for_dataset(info)
    assert info["checkpoint_band_stats"]["mean"] == MEAN


def test_a_missing_band_is_fed_as_zeros(ckpt):
    model, info = mae_classifier_from_checkpoint(ckpt, num_classes=3, band_mapping=[0, 1, 2, 3, 4, -1])
    seen = []
    model.patch_embed.register_forward_hook(lambda mod, args, out: seen.append(args[0]))
    model(torch.full((1, 5, 16, 16), 7.0))
    band5 = seen[0].reshape(1, 2, 16, 3, 16)[0, 1, :, 2]  # group 1, third band = checkpoint band 5
    assert torch.equal(band5, torch.zeros(16, 16)) and seen[0].sum() == 7.0 * 5 * 256
    assert info["band_stats"] == {"mean": MEAN[:5], "std": STD[:5]}


@pytest.mark.parametrize(
    ("mapping", "match"),
    [
        ({"B9": "B1"}, r"keys \['B9'\] are not checkpoint bands"),
        ({"B1": "B2"}, r"feeds dataset band\(s\) \[1\] to several checkpoint bands"),
        ({"B1": "Y"}, r"values \['Y'\] are not dataset bands"),
        ([0, 1, 2], r"has 3 entries but the checkpoint has 6 bands"),
    ],
)
def test_bad_mappings_say_what_is_wrong(ckpt, mapping, match):
    with pytest.raises(ValueError, match=match):
        mae_classifier_from_checkpoint(ckpt, num_classes=3, dataset_band_names=BANDS, band_mapping=mapping)


def test_a_checkpoint_band_neither_mapped_nor_in_the_dataset_is_an_error(ckpt):
    with pytest.raises(ValueError, match=r"checkpoint band\(s\) \['B6'\].*map them to None"):
        mae_classifier_from_checkpoint(ckpt, num_classes=3, dataset_band_names=BANDS[:5] + ["Z"],
                                       band_mapping={"B1": "B1"})


def test_unexpected_non_decoder_keys_are_an_error_naming_them(ckpt, tmp_path):
    path = save_modified(ckpt, tmp_path, lambda c: c["model"].__setitem__("extra.weight", torch.zeros(2)))
    with pytest.raises(ValueError, match=r"unexpected \['extra.weight'\]"):
        mae_classifier_from_checkpoint(path, num_classes=3)


def test_missing_encoder_keys_are_an_error_naming_them(ckpt, tmp_path):
    path = save_modified(ckpt, tmp_path, lambda c: c["model"].pop("blocks.0.norm1.weight"))
    with pytest.raises(ValueError, match=r"missing \['blocks.0.norm1.weight'\]"):
        mae_classifier_from_checkpoint(path, num_classes=3)


def test_a_checkpoint_without_model_kwargs_is_not_an_mae_checkpoint(ckpt, tmp_path):
    path = save_modified(ckpt, tmp_path, lambda c: c["metadata"].pop("model_kwargs"))
    with pytest.raises(ValueError, match=r"metadata.model_kwargs .* is missing"):
        mae_classifier_from_checkpoint(path, num_classes=3)


def test_the_classifier_builds_from_a_fresh_mae_without_a_checkpoint():
    model = MAEEncoderClassifier(tiny_mae(), num_classes=4, global_pool="cls")
    assert model(torch.randn(3, 6, 16, 16)).shape == (3, 4)
    with pytest.raises(ValueError, match=r"global_pool must be one of \('avg', 'cls'\), got 'max'"):
        MAEEncoderClassifier(tiny_mae(), num_classes=4, global_pool="max")
