"""The spectral MAE: patches, masking, encoder input, loss wiring, variants, optimiser hooks."""

import time

import pytest
import timm.optim
import torch

from spectral_training.models import MAE_VARIANTS, MaskedAutoencoderViT, build_mae, mae_parameter_counts

TINY = dict(  # 7 bands, 16 px, 4x4x3 patches: G = 3 groups (2 padded bands), N = 16, L = 48
    spatial_patch=4,
    spectral_patch=3,
    embed_dim=32,
    depth=2,
    num_heads=2,
    decoder_embed_dim=16,
    decoder_depth=1,
    decoder_num_heads=2,
)


def tiny(num_bands=7, **overrides):
    torch.manual_seed(0)
    return build_mae("tiny", num_bands, 16, **{**TINY, **overrides})


@pytest.fixture
def model():
    return tiny()


@pytest.fixture
def cube():
    return torch.randn(2, 7, 16, 16, generator=torch.Generator().manual_seed(1))


def test_geometry(model):
    assert (model.num_groups, model.num_spatial, model.num_patches, model.patch_dim) == (3, 16, 48, 48)
    assert model.num_pad_bands == 2


def test_patchify_unpatchify_round_trip_drops_band_padding(model, cube):
    patches = model.patchify(cube)
    assert patches.shape == (2, 48, 48)
    assert torch.equal(model.unpatchify(patches), cube)


def test_patchify_token_order_is_group_major_and_patch_is_band_major(model, cube):
    patches = model.patchify(cube)
    g, i, j = 1, 2, 3  # band group 1 = bands 3..5, patch row 2, column 3
    expected = cube[0, 3:6, 8:12, 12:16].reshape(-1)
    assert torch.equal(patches[0, g * 16 + i * 4 + j], expected)
    assert torch.equal(patches[0, 2 * 16, 16:], torch.zeros(32))  # last group: bands 7, 8 are padding


def test_round_trip_without_padding():
    m = tiny(num_bands=6)
    x = torch.randn(1, 6, 16, 16)
    assert m.num_pad_bands == 0 and torch.equal(m.unpatchify(m.patchify(x)), x)


def test_image_size_not_multiple_of_patch_says_which_sizes_fit():
    with pytest.raises(ValueError, match=r"height 18 px is not a multiple of spatial_patch=4.*16 or 20"):
        build_mae("tiny", 7, 18, **TINY)


def test_wrong_input_shape_is_rejected(model):
    with pytest.raises(ValueError, match=r"\(B, 7, 16, 16\)"):
        model(torch.randn(1, 6, 16, 16))


def test_encoder_sees_only_visible_tokens_plus_cls(model, cube):
    seen = []
    model.blocks[0].register_forward_hook(lambda mod, args, out: seen.append(args[0].shape))
    model(cube, mask_ratio=0.75)
    assert seen == [torch.Size([2, 1 + 12, 32])]  # 48 * 0.25 = 12 visible


def test_mask_has_the_right_fraction(model, cube):
    out = model(cube)  # default 0.8: keep int(48 * 0.2) = 9
    assert out["mask"].shape == (2, 48)
    assert out["mask"].sum(1).tolist() == [39.0, 39.0]
    assert not torch.equal(out["mask"][0], out["mask"][1])  # per-sample masks


def test_reference_geometry_keeps_exactly_twenty_percent():
    m = build_mae("tiny", 30, 500, device="meta")  # defaults: 25x25x5 patches, mask 0.8
    _, mask, _ = m.random_masking(2, m.mask_ratio, torch.device("cpu"))
    assert m.num_patches == 2400 and mask.sum(1).tolist() == [1920.0, 1920.0]


def test_mask_ratio_zero_keeps_all_tokens_in_order(model, cube):
    out = model(cube, mask_ratio=0.0)
    assert out["mask"].sum() == 0 and out["loss"].item() == 0.0
    latent, _, ids_restore = model.forward_encoder(cube, mask_ratio=0.0)
    assert latent.shape == (2, 49, 32) and torch.equal(ids_restore[0], torch.arange(48))


def test_output_contract(model, cube):
    out = model(cube)
    assert out["pred"].shape == (2, 48, 48)
    assert set(out["loss_parts"]) == {"mse", "sam", "variance", "range"}
    assert out["loss"].dim() == 0 and torch.isfinite(out["loss"])


def test_same_generator_seed_gives_same_mask(model, cube):
    a = model(cube, generator=torch.Generator().manual_seed(3))["mask"]
    b = model(cube, generator=torch.Generator().manual_seed(3))["mask"]
    assert torch.equal(a, b)


def test_loss_ignores_visible_tokens_and_padded_bands(model, cube):
    with torch.no_grad():
        out = model(cube)
        patches, pred, mask = model.patchify(cube), out["pred"].clone(), out["mask"]
        base, _ = model.forward_loss(patches, pred, mask)
        pred[mask == 0] = 1e3  # visible tokens
        pred.view(2, 3, 16, 3, 16)[:, 2, :, 1:] = -1e3  # bands 7 and 8 of the last group: padding
        changed, _ = model.forward_loss(patches, pred, mask)
    assert torch.equal(base, changed)


def test_norm_pix_target_statistics_ignore_padding(cube):
    m = tiny(norm_pix_loss=True)
    mean, var = m.patch_stats(m.patchify(cube))
    real = cube[0, 6:7, 0:4, 0:4].reshape(-1)  # token 32 = last group at patch (0, 0): 1 real band
    assert mean[0, 32, 0].item() == pytest.approx(real.mean().item(), abs=1e-6)
    assert var[0, 32, 0].item() == pytest.approx(real.var().item(), abs=1e-5)
    assert torch.isfinite(m(cube)["loss"])


def test_loss_decreases_on_one_batch(model, cube):
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(15):
        g.manual_seed(0)  # same mask every step
        loss = model(cube, generator=g)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.8 * losses[0]


def test_bf16_autocast_returns_float32_loss(model, cube):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(cube)
    assert out["pred"].dtype == torch.bfloat16
    assert out["loss"].dtype == torch.float32 and torch.isfinite(out["loss"])
    out["loss"].backward()
    assert model.patch_embed.weight.grad is not None


@pytest.mark.parametrize("norm_pix_loss", [False, True])
def test_reconstruct_keeps_visible_patches_equal_to_input(cube, norm_pix_loss):
    m = tiny(norm_pix_loss=norm_pix_loss)
    recon, pixel_mask = m.reconstruct(cube)
    assert recon.shape == cube.shape and pixel_mask.shape == cube.shape and pixel_mask.dtype == torch.bool
    assert torch.equal(recon[~pixel_mask], cube[~pixel_mask])
    assert not torch.equal(recon[pixel_mask], cube[pixel_mask])
    assert pixel_mask.float().mean().item() == pytest.approx(39 / 48, abs=0.05)  # padding excluded


def test_wavelengths_change_the_position_code():
    plain, with_nm = tiny(), tiny(wavelengths_nm=[443, 490, 560, 665, 705, 740, 783])
    assert not torch.equal(plain.pos_embed, with_nm.pos_embed)
    assert not plain.pos_embed.requires_grad
    with pytest.raises(ValueError, match="wavelengths_nm has 3 values"):
        tiny(wavelengths_nm=[1, 2, 3])


def test_unknown_variant_lists_the_variants():
    with pytest.raises(ValueError, match="tiny, small, base, medium, large, huge"):
        build_mae("gigantic", 7, 16)


def test_unknown_override_is_named():
    with pytest.raises(TypeError, match="decoder_width"):
        build_mae("tiny", 7, 16, decoder_width=64, **TINY)


def test_all_variants_build_and_grow_in_size():
    counts = {}
    for name in MAE_VARIANTS:
        m = build_mae(name, 7, 16, spatial_patch=4, spectral_patch=3, device="meta")
        assert isinstance(m, MaskedAutoencoderViT)
        counts[name] = m.parameter_counts()["encoder"]
    # medium (16 x 512) is smaller than base (12 x 768): order by size, not by the table's order
    order = ["tiny", "small", "medium", "base", "large", "huge"]
    assert [counts[n] for n in order] == sorted(counts.values())
    assert len(set(counts.values())) == len(counts)


def test_huge_builds_quickly_at_the_reference_setup():
    start = time.perf_counter()
    counts = mae_parameter_counts("huge", num_bands=30, image_size=500)
    assert time.perf_counter() - start < 20
    assert 600e6 < counts["encoder"] < 660e6  # reference quotes ~632M
    assert counts["total"] == counts["encoder"] + counts["decoder"]


def test_tiny_variant_really_builds_and_runs_on_cpu():
    m = build_mae("tiny", 5, 32, spatial_patch=8, spectral_patch=5, decoder_depth=1, drop_path_rate=0.1)
    out = m(torch.randn(1, 5, 32, 32))
    assert torch.isfinite(out["loss"])


def test_no_weight_decay_names_are_parameters(model):
    names = dict(model.named_parameters())
    assert model.no_weight_decay() <= set(names)


def test_timm_layer_decay_optimizer_works(model, cube):
    opt = timm.optim.create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.05, layer_decay=0.75)
    scales = sorted({g["lr_scale"] for g in opt.param_groups})
    assert len(scales) == 1 + 2 + 1  # stem, 2 encoder blocks, decoder (top, scale 1)
    assert scales[-1] == 1.0 and scales[0] == pytest.approx(0.75**3)
    no_decay = {id(p) for g in opt.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    assert id(model.cls_token) in no_decay and id(model.mask_token) in no_decay
    model(cube)["loss"].backward()
    opt.step()


def test_the_whole_mae_compiles_as_one_graph_with_the_eager_loss_and_gradients(cube):
    """train.compile fuses the model with its loss only when nothing breaks the graph (band
    padding, masking by argsort and the mae_spectral loss included)."""
    torch._dynamo.reset()
    eager, compiled_model = tiny(), tiny()
    compiled = torch.compile(compiled_model, backend="aot_eager", fullgraph=True)  # a graph break fails
    torch.manual_seed(3)  # the masks come from the global RNG, as in training (a Generator argument does not compile)
    eager_out = eager(cube)
    torch.manual_seed(3)
    compiled_out = compiled(cube)
    assert torch.equal(compiled_out["mask"], eager_out["mask"])
    torch.testing.assert_close(compiled_out["loss"], eager_out["loss"])
    eager_out["loss"].backward()
    compiled_out["loss"].backward()
    for (name, a), (_, b) in zip(eager.named_parameters(), compiled_model.named_parameters()):
        if a.grad is not None:
            torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-6, msg=name)
