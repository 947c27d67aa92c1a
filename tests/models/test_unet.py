"""The U-Net, SimMIM masking and its loss on tiny tensors."""

import pytest
import torch

from spectral_training.models.unet import (
    SimMIMUNet,
    UNet,
    load_encoder,
    masked_mse,
    patch_mask_to_pixels,
    random_patch_mask,
)


def test_unet_maps_any_band_count_to_per_pixel_outputs_at_the_input_size():
    torch.manual_seed(0)
    assert UNet("resnet18", 7, 3, decoder_channels=(16, 8))(torch.randn(2, 7, 24, 24)).shape == (2, 3, 24, 24)


def test_the_mask_hides_exactly_the_ratio_of_patches_of_every_image():
    mask = random_patch_mask(5, (16, 16), 4, 0.5, generator=torch.Generator().manual_seed(0))
    assert mask.shape == (5, 16) and mask.sum(dim=1).tolist() == [8] * 5
    assert not torch.equal(mask[0], mask[1])  # drawn per image
    pixels = patch_mask_to_pixels(mask, (16, 16), 4)
    assert pixels.shape == (5, 1, 16, 16) and pixels[0, 0, :4, :4].all() == mask[0, 0]


def test_the_loss_counts_masked_values_only():
    target = torch.zeros(1, 2, 4, 4)
    pixels = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    pixels[..., :2, :] = True  # top half masked
    pred = torch.zeros(1, 2, 4, 4, requires_grad=True)
    wrong_where_visible = pred + torch.where(pixels, 0.0, 5.0)
    assert masked_mse(wrong_where_visible, target, pixels).item() == 0.0
    wrong_where_masked = pred + torch.where(pixels, 2.0, 0.0)
    loss = masked_mse(wrong_where_masked, target, pixels)
    assert loss.item() == pytest.approx(4.0)
    loss.backward()
    assert (pred.grad[..., 2:, :] == 0).all() and (pred.grad[..., :2, :] != 0).all()


def test_simmim_training_lowers_the_reconstruction_loss():
    torch.manual_seed(0)
    base = torch.linspace(-1, 1, 16)
    x = (base[None, :, None] * base[None, None, :]).expand(4, 16, 16)[None].repeat(8, 1, 1, 1)  # smooth tiles
    x = x + 0.05 * torch.randn_like(x)
    model = SimMIMUNet("resnet18", 4, 16, patch_size=4, mask_ratio=0.5, decoder_channels=(16, 8))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    masks = random_patch_mask(8, (16, 16), 4, 0.5, generator=torch.Generator().manual_seed(1))
    losses = []
    for _ in range(15):
        optimizer.zero_grad()
        loss = model(x, mask=masks)["loss"]
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_load_encoder_copies_the_encoder_and_refuses_another_band_count():
    torch.manual_seed(0)
    source, target = UNet("resnet18", 5, 5, (8,)), UNet("resnet18", 5, 3, (8,))
    load_encoder(target, source.encoder_state_dict())
    assert all(torch.equal(a, b) for a, b in zip(source.encoder.state_dict().values(), target.encoder.state_dict().values()))
    with pytest.raises(ValueError, match="band count"):
        load_encoder(UNet("resnet18", 6, 3, (8,)), source.encoder_state_dict())
