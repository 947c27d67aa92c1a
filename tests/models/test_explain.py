"""Saliency maps: attention rollout for timm ViT/EVA, Grad-CAM for the rest, model state untouched."""

import pytest
import timm
import torch
import torchvision
from torch import nn

from spectral_training.models.explain import attention_rollout, explain, grad_cam

VIT = dict(pretrained=False, img_size=32, patch_size=8, num_classes=3, in_chans=5, embed_dim=32, num_heads=2)


def _vit(depth=2, **kw):
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", depth=depth, **{**VIT, **kw})


def _x(*shape, seed=1):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def _check_maps(maps, shape):
    assert maps.shape == shape
    assert maps.dtype == torch.float32
    assert torch.isfinite(maps).all()
    assert maps.min() >= 0 and maps.max() <= 1
    assert maps.flatten(1).std(dim=1).min() > 1e-3  # not constant: something was captured


def _tv_vit():
    torch.manual_seed(0)
    model = torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=3
    )
    nn.init.normal_(model.heads.head.weight)  # torchvision zero-initialises the head: all gradients would be 0
    return model


# name -> (model factory, input shape, layer Grad-CAM must pick)
GRAD_CAM_MODELS = {
    "resnet18": (lambda: timm.create_model("resnet18", pretrained=False, num_classes=3, in_chans=5), (2, 5, 64, 64), "layer4"),
    "swin_nhwc": (
        lambda: timm.create_model(
            "swin_tiny_patch4_window7_224", pretrained=False, img_size=64, window_size=4, num_classes=3,
            in_chans=4, depths=(1, 1, 1, 1), embed_dim=24, num_heads=(1, 1, 1, 1),
        ),
        (2, 4, 64, 64),
        "norm",  # the final (B, 2, 2, C) NHWC map, not a (B, heads, N, N) window attention
    ),
    "torchvision_vit": (_tv_vit, (2, 3, 32, 32), "encoder.layers.encoder_layer_1.ln_1"),
}


@pytest.mark.parametrize("name", GRAD_CAM_MODELS)
def test_grad_cam_maps_and_layer(name):
    factory, shape, layer = GRAD_CAM_MODELS[name]
    torch.manual_seed(0)
    model = factory()
    maps, method = explain(model, _x(*shape))
    assert method == "grad_cam"
    _check_maps(maps, (shape[0], *shape[2:]))
    assert grad_cam(model, _x(*shape))[1] == layer


@pytest.mark.parametrize("name", ["vit", "vit_registers", "eva02"])
def test_rollout_for_timm_vits_restores_fused_attn(name):
    if name == "eva02":
        torch.manual_seed(0)
        model = timm.create_model("eva02_tiny_patch14_224", depth=2, **VIT)  # rope, avg pooling
    else:
        model = _vit(reg_tokens=4 if name == "vit_registers" else 0)
    attns = [blk.attn for blk in model.blocks]
    for attn in attns:
        attn.fused_attn = True
    maps, method = explain(model, _x(3, 5, 32, 32))
    assert method == "attention_rollout"
    _check_maps(maps, (3, 32, 32))
    assert all(attn.fused_attn is True for attn in attns)
    assert all(not attn.attn_drop._forward_pre_hooks for attn in attns)


def test_rollout_equals_hand_computed_attention_of_one_block():
    model = _vit(depth=1).eval()
    x = _x(2, 5, 32, 32)
    with torch.no_grad():  # the block's attention by hand, as timm's unfused path computes it
        tokens = model.norm_pre(model._pos_embed(model.patch_embed(x)))
        attn_mod = model.blocks[0].attn
        b, n, _ = tokens.shape
        qkv = attn_mod.qkv(model.blocks[0].norm1(tokens)).reshape(b, n, 3, 2, 16).permute(2, 0, 3, 1, 4)
        a = ((qkv[0] * attn_mod.scale) @ qkv[1].transpose(-2, -1)).softmax(-1).mean(1)  # (B, N, N)
    cls_row = (0.5 * a + 0.5 * torch.eye(n))[:, 0, 1:].reshape(b, 1, 4, 4)  # one block: R = 0.5 A + 0.5 I
    expected = nn.functional.interpolate(cls_row, size=(32, 32), mode="bilinear", align_corners=False)[:, 0]
    lo = expected.flatten(1).min(1).values[:, None, None]
    hi = expected.flatten(1).max(1).values[:, None, None]
    maps, _ = explain(model, x)
    torch.testing.assert_close(maps, (expected - lo) / (hi - lo), atol=1e-5, rtol=1e-4)


def test_attention_rollout_by_hand():
    # 1 prefix + 2 patches, one head, two blocks. Block 1 sends all attention to patch 2.
    a1 = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    a2 = torch.full((3, 3), 1 / 3)
    out = attention_rollout([a1[None, None], a2[None, None]], num_prefix_tokens=1, from_cls=True)
    r1 = 0.5 * a1 + 0.5 * torch.eye(3)
    r2 = 0.5 * a2 + 0.5 * torch.eye(3)
    # r1[0] = [1/2, 0, 1/2]; r2[0] = [2/3, 1/6, 1/6] -> (r2 r1)[0] = [1/3, 1/12, 7/12]
    torch.testing.assert_close(out, torch.tensor([[1 / 12, 7 / 12]]))
    torch.testing.assert_close(out, (r2 @ r1)[0:1, 1:])
    mean_rows = attention_rollout([a1[None, None], a2[None, None]], num_prefix_tokens=1, from_cls=False)
    torch.testing.assert_close(mean_rows, (r2 @ r1)[1:, 1:].mean(0, keepdim=True))


def test_rollout_restores_fused_attn_and_hooks_on_error():
    model = _vit()
    model.head.register_forward_hook(lambda *_: (_ for _ in ()).throw(RuntimeError("boom")))
    for blk in model.blocks:
        blk.attn.fused_attn = True
    with pytest.raises(RuntimeError, match="boom"):
        explain(model, _x(1, 5, 32, 32))
    assert all(blk.attn.fused_attn is True for blk in model.blocks)
    assert all(not blk.attn.attn_drop._forward_pre_hooks for blk in model.blocks)


@pytest.mark.parametrize("factory", [_vit, lambda: timm.create_model("resnet10t", pretrained=False, num_classes=3, in_chans=5)])
def test_model_state_restored_and_no_gradients_leak(factory):
    model = factory().train()
    model.get_submodule("head" if hasattr(model, "head") else "fc").eval()  # a mixed-mode model stays mixed
    modes = {n: m.training for n, m in model.named_modules()}
    frozen = next(model.parameters())
    frozen.requires_grad_(False)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    for fn in (explain, grad_cam):  # grad_cam on the ViT too: the autograd path
        fn(model, _x(2, 5, 32, 32))
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert all(p.grad is None for p in model.parameters())


def test_grad_cam_works_on_a_frozen_model_under_no_grad():
    model = timm.create_model("resnet10t", pretrained=False, num_classes=3, in_chans=5).requires_grad_(False)
    with torch.no_grad():
        maps, method = explain(model, _x(2, 5, 64, 64))
    assert method == "grad_cam"
    _check_maps(maps, (2, 64, 64))


def test_zero_initialised_head_gives_zero_maps_with_a_warning():
    model = torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=1, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=3
    )
    with pytest.warns(UserWarning, match="non-zero gradient"):
        maps, _ = explain(model, _x(2, 3, 32, 32))
    assert maps.shape == (2, 32, 32) and not maps.any()
