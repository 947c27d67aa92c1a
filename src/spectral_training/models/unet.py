"""U-Nets on a timm encoder, and the two self-supervised heads trained on them.

    UNet                    timm encoder (features_only, any band count) + a decoder with skips
    SimMIMUNet              masked image modelling: random patches hidden, reconstructed, loss on them only
    TemporalUNet            one date of a series predicted from the others (lives in unet_temporal.py)

Shapes: ``x`` is (B, C, H, W); the encoder returns features at strides 2, 4, 8, 16, 32 (for a
ResNet) and the decoder climbs back, each step upsampling to the size of the skip it joins, so
any input size works (32 px tiles give a 1 x 1 deepest map). A last block at full resolution
joins the input itself, then a 1 x 1 convolution gives ``out_chans`` per pixel.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn

ENCODER_PREFIX = "encoder."


class ConvBlock(nn.Sequential):
    """(conv 3 x 3, BatchNorm, ReLU) x 2."""

    def __init__(self, in_chans: int, out_chans: int) -> None:
        super().__init__(
            nn.Conv2d(in_chans, out_chans, 3, padding=1, bias=False), nn.BatchNorm2d(out_chans), nn.ReLU(inplace=True),
            nn.Conv2d(out_chans, out_chans, 3, padding=1, bias=False), nn.BatchNorm2d(out_chans), nn.ReLU(inplace=True),
        )


class UNet(nn.Module):
    """timm encoder + decoder with skip connections; (B, in_chans, H, W) -> (B, out_chans, H, W).

    Args:
        encoder: a timm model name that supports ``features_only`` (resnet18, resnet34, ...).
        in_chans: bands of the input (timm builds the first convolution for them).
        out_chans: values per output pixel (bands to reconstruct, or class logits).
        decoder_channels: widths of the decoder blocks, deepest first, one per encoder stage
            (shorter lists are extended with their last value).
        encoder_kwargs: extra ``timm.create_model`` arguments (e.g. ``{"output_stride": 16}``).
    """

    def __init__(self, encoder: str, in_chans: int, out_chans: int,
                 decoder_channels: Sequence[int] = (128, 64, 48, 32, 24),
                 encoder_kwargs: Mapping | None = None) -> None:
        super().__init__()
        self.encoder = timm.create_model(encoder, pretrained=False, features_only=True, in_chans=in_chans,
                                         **dict(encoder_kwargs or {}))
        skips = list(self.encoder.feature_info.channels())  # shallow -> deep
        widths = list(decoder_channels)[: len(skips)] or [32]
        widths += [widths[-1]] * (len(skips) - len(widths))
        blocks, below = [], skips[-1]
        # deepest stage first: block i joins the output below it with skip len-2-i (or the input)
        for i, width in enumerate(widths[:-1]):
            blocks.append(ConvBlock(below + skips[-2 - i], width))
            below = width
        self.blocks = nn.ModuleList(blocks)
        self.full_res = ConvBlock(below + in_chans, widths[-1])  # joins the input at full resolution
        self.head = nn.Conv2d(widths[-1], out_chans, 1)
        self.in_chans, self.out_chans = in_chans, out_chans

    def decode(self, features: list[Tensor], x: Tensor) -> Tensor:
        """Encoder features (shallow -> deep) and the input -> the last decoder map (B, w, H, W)."""
        y = features[-1]
        for i, block in enumerate(self.blocks):
            skip = features[-2 - i]
            y = F.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            y = block(torch.cat([y, skip], dim=1))
        y = F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return self.full_res(torch.cat([y, x], dim=1))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.decode(self.encoder(x), x))

    def encoder_state_dict(self) -> dict[str, Tensor]:
        """The encoder's weights, keys prefixed ``encoder.`` (what another U-Net loads)."""
        return {f"{ENCODER_PREFIX}{k}": v for k, v in self.encoder.state_dict().items()}


def load_encoder(unet: UNet, state_dict: Mapping[str, Tensor], *, source: str = "the checkpoint") -> list[str]:
    """Copy the ``encoder.*`` weights of ``state_dict`` into ``unet``'s encoder; returns the keys loaded.

    Raises:
        ValueError: no encoder weights in ``state_dict``, or shapes that differ (another encoder or
            band count), naming the first mismatching key and both shapes.
    """
    encoder_state = {k[len(ENCODER_PREFIX):]: v for k, v in state_dict.items() if k.startswith(ENCODER_PREFIX)}
    if not encoder_state:
        raise ValueError(f"{source} holds no encoder weights (no key starts with '{ENCODER_PREFIX}')")
    own = unet.encoder.state_dict()
    for key, value in encoder_state.items():
        if key not in own or own[key].shape != value.shape:
            mine = tuple(own[key].shape) if key in own else "absent"
            raise ValueError(f"{source}: encoder weight '{key}' has shape {tuple(value.shape)} but this U-Net's is "
                             f"{mine}: the encoder name and the band count must match the pretraining's")
    missing = sorted(set(own) - set(encoder_state))
    if missing:
        raise ValueError(f"{source}: encoder weights missing for {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    unet.encoder.load_state_dict(encoder_state)
    return sorted(encoder_state)


def random_patch_mask(batch: int, image_size: tuple[int, int], patch_size: int, mask_ratio: float,
                      *, device: torch.device | str = "cpu", generator: torch.Generator | None = None) -> Tensor:
    """SimMIM's mask: exactly ``round(ratio * L)`` of the ``L`` patches of each image, at random.

    Returns:
        bool (B, L), True = masked, patches in row-major order of the patch grid; at least one
        patch is masked and, when the grid has two or more, at least one stays visible.
    """
    h, w = image_size
    if h % patch_size or w % patch_size:
        raise ValueError(f"image size {h} x {w} is not a multiple of patch_size={patch_size}: choose a divisor "
                         f"of the tile size")
    num = (h // patch_size) * (w // patch_size)
    masked = min(max(int(round(mask_ratio * num)), 1), max(num - 1, 1))
    noise = torch.rand(batch, num, generator=generator, device="cpu" if generator is not None else device)
    ranks = noise.argsort(dim=1).argsort(dim=1)  # a random permutation per image
    return (ranks < masked).to(device)


def patch_mask_to_pixels(mask: Tensor, image_size: tuple[int, int], patch_size: int) -> Tensor:
    """(B, L) patch mask -> (B, 1, H, W) pixel mask."""
    h, w = image_size
    grid = mask.reshape(mask.shape[0], 1, h // patch_size, w // patch_size)
    return grid.repeat_interleave(patch_size, dim=2).repeat_interleave(patch_size, dim=3)


def masked_mse(pred: Tensor, target: Tensor, pixel_mask: Tensor) -> Tensor:
    """Mean squared error over the masked values only (every band of a masked pixel), in fp32.

    ``pixel_mask`` (B, 1 or C, H, W) bool; with no masked value the loss is 0 and still
    depends on ``pred`` (so backward gives zero gradients, not none).
    """
    weight = pixel_mask.expand_as(target).float()
    return ((pred.float() - target.float()) ** 2 * weight).sum() / weight.sum().clamp(min=1.0)


class SimMIMUNet(nn.Module):
    """Masked image modelling on a U-Net (SimMIM-style, per-band normalised input).

    Masked pixels are replaced, in every band, by a learned per-band mask value; the U-Net
    reconstructs all pixels and the loss counts the masked ones only.
    ``spatial_patch`` / ``spectral_patch`` name the masking geometry as the spectral MAE does
    (one patch covers every band), so the MAE's evaluation and baselines apply unchanged.
    """

    def __init__(self, encoder: str, num_bands: int, image_size: int, patch_size: int = 4, mask_ratio: float = 0.6,
                 decoder_channels: Sequence[int] = (128, 64, 48, 32, 24), encoder_kwargs: Mapping | None = None) -> None:
        super().__init__()
        if not 0.0 < mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in (0, 1), got {mask_ratio}")
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
        self.unet = UNet(encoder, num_bands, num_bands, decoder_channels, encoder_kwargs)
        self.mask_value = nn.Parameter(torch.zeros(1, num_bands, 1, 1))
        self.num_bands, self.image_size = num_bands, image_size
        self.patch_size = self.spatial_patch = patch_size
        self.spectral_patch = num_bands
        self.mask_ratio = float(mask_ratio)

    def forward(self, x: Tensor, mask: Tensor | None = None, generator: torch.Generator | None = None) -> dict:
        """x (B, C, H, W) normalised -> {"loss", "pred" (B, C, H, W), "mask" (B, L) bool}."""
        size = tuple(x.shape[-2:])
        if mask is None:
            mask = random_patch_mask(x.shape[0], size, self.patch_size, self.mask_ratio, device=x.device,
                                     generator=generator)
        pixels = patch_mask_to_pixels(mask, size, self.patch_size)
        masked_input = torch.where(pixels, self.mask_value.to(x.dtype), x)
        pred = self.unet(masked_input)
        return {"loss": masked_mse(pred, x, pixels), "pred": pred, "mask": mask}

    @torch.no_grad()
    def reconstruct(self, x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """(reconstruction with the visible values copied from x, bool (B, C, H, W) pixel mask)."""
        out = self.forward(x, generator=generator)
        pixels = patch_mask_to_pixels(out["mask"], tuple(x.shape[-2:]), self.patch_size).expand_as(x)
        return torch.where(pixels, out["pred"].to(x.dtype), x), pixels
