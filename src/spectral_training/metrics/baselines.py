"""Cheap reconstructions the masked autoencoder has to beat.

Both baselines return a full ``(B, C, H, W)`` cube in the units of ``original`` (physical units
in evaluation): visible values are copied from the input, masked values are predicted. Score
them with the same :class:`~spectral_training.metrics.reconstruction.ReconstructionMetrics`
and the same mask as the model, in the same run, so the numbers compare.

Token layout (the model's): ``mask_tokens`` is ``(B, L)`` with ``1`` = masked and
``L = G * Hp * Wp`` tokens ordered ``(spectral_group, grid_row, grid_col)``, i.e.
``index = g * (Hp * Wp) + r * Wp + c``, where ``Hp = H / spatial_patch``,
``Wp = W / spatial_patch`` and ``G = ceil(C / spectral_patch)``. When ``C`` is not a multiple of
``spectral_patch`` the model pads zero bands at the END; those padded bands are dropped here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["band_mean_baseline", "neighbour_patch_baseline", "token_mask_to_pixel_mask"]


def _grid(num_bands: int, image_size: tuple[int, int], spatial_patch: int, spectral_patch: int) -> tuple[int, int, int]:
    h, w = int(image_size[0]), int(image_size[1])
    if spatial_patch < 1 or spectral_patch < 1:
        raise ValueError(f"patch sizes must be >= 1; got spatial_patch={spatial_patch}, spectral_patch={spectral_patch}.")
    if h % spatial_patch or w % spatial_patch:
        raise ValueError(
            f"image size {h} x {w} is not a multiple of spatial_patch={spatial_patch}; "
            "tile the data to a multiple of the patch size."
        )
    return math.ceil(num_bands / spectral_patch), h // spatial_patch, w // spatial_patch


def token_mask_to_pixel_mask(
    mask_tokens: Tensor,
    num_bands: int,
    image_size: tuple[int, int],
    spatial_patch: int,
    spectral_patch: int,
) -> Tensor:
    """Expand a per-token mask to a per-value mask.

    Args:
        mask_tokens: ``(B, L)``, nonzero/True = masked, order ``(group, row, col)``.
        num_bands: ``C``, the real number of bands (padded bands are dropped).
        image_size: ``(H, W)`` in pixels.
        spatial_patch: patch side ``p`` in pixels.
        spectral_patch: bands per token ``s``.

    Returns:
        bool ``(B, C, H, W)``, True where the value belongs to a masked token.
    """
    g, hp, wp = _grid(num_bands, image_size, spatial_patch, spectral_patch)
    if mask_tokens.ndim != 2 or mask_tokens.shape[1] != g * hp * wp:
        raise ValueError(
            f"mask_tokens has shape {tuple(mask_tokens.shape)}; expected (B, {g * hp * wp}) = "
            f"(B, groups {g} * rows {hp} * cols {wp}) for {num_bands} bands, image {tuple(image_size)}, "
            f"spatial_patch {spatial_patch}, spectral_patch {spectral_patch}."
        )
    m = mask_tokens.bool().reshape(-1, g, hp, wp)  # (B, G, Hp, Wp)
    m = m.repeat_interleave(spectral_patch, dim=1)  # (B, G*s, Hp, Wp)
    m = m.repeat_interleave(spatial_patch, dim=2).repeat_interleave(spatial_patch, dim=3)  # (B, G*s, H, W)
    return m[:, :num_bands].contiguous()  # drop padded bands -> (B, C, H, W)


def band_mean_baseline(
    original: Tensor,
    masked: Tensor,
    band_means: Sequence[float] | Tensor,
) -> Tensor:
    """Masked values = the per-band TRAINING mean, visible values = the input.

    Args:
        original: ``(B, C, H, W)`` input cube.
        masked: bool, broadcastable to ``original``; True where hidden from the model.
        band_means: ``C`` per-band means from the training band stats, same units as ``original``.

    Returns:
        ``(B, C, H, W)`` tensor, dtype and device of ``original``.
    """
    c = original.shape[1]
    means = torch.as_tensor(band_means, dtype=original.dtype, device=original.device).flatten()
    if means.numel() != c:
        raise ValueError(f"band_means has {means.numel()} values but the cube has {c} bands.")
    return torch.where(masked.bool(), means.view(1, c, 1, 1), original)


def neighbour_patch_baseline(
    original: Tensor,
    mask_tokens: Tensor,
    spatial_patch: int,
    spectral_patch: int,
    band_means: Sequence[float] | Tensor | None = None,
) -> Tensor:
    """Predict each masked patch from its visible neighbours on the patch grid.

    A masked token ``(g, r, c)`` is predicted as the PIXELWISE average of the visible tokens
    among ``(g, r-1, c)``, ``(g, r+1, c)``, ``(g, r, c-1)``, ``(g, r, c+1)`` (same spectral group,
    4-neighbourhood; masked neighbours are not used): value ``(band k, offset i, j)`` of the
    prediction is the mean of value ``(band k, offset i, j)`` of those neighbours. This keeps
    texture and reproduces linear ramps exactly. When no neighbour is visible, the patch is filled
    with the per-band mean of all visible values of that image; when a band has no visible value
    in that image at all, with ``band_means`` (the training means; required only in that case).

    Args:
        original: ``(B, C, H, W)`` input cube.
        mask_tokens: ``(B, L)``, 1 = masked, model token order (see module docstring).
        spatial_patch: patch side in pixels.
        spectral_patch: bands per token.
        band_means: optional ``C`` training means, the last fallback.

    Returns:
        ``(B, C, H, W)``: visible values copied from ``original``, masked values predicted.
    """
    b, c, h, w = original.shape
    p, s = spatial_patch, spectral_patch
    pixel_mask = token_mask_to_pixel_mask(mask_tokens, c, (h, w), p, s)  # (B, C, H, W)
    g, hp, wp = _grid(c, (h, w), p, s)
    x = original
    if g * s > c:  # the model's zero padding at the end of the band axis
        x = torch.cat([x, x.new_zeros(b, g * s - c, h, w)], dim=1)
    # (B, G*s, H, W) -> (B, G, Hp, Wp, s, p, p): one patch per grid cell
    patches = x.reshape(b, g, s, hp, p, wp, p).permute(0, 1, 3, 5, 2, 4, 6)
    visible = (~mask_tokens.bool()).reshape(b, g, hp, wp).to(x.dtype)  # (B, G, Hp, Wp)

    vis_p = patches * visible[..., None, None, None]
    pad_p = torch.nn.functional.pad(vis_p, (0, 0, 0, 0, 0, 0, 1, 1, 1, 1))  # pad Wp, Hp by 1
    pad_v = torch.nn.functional.pad(visible, (1, 1, 1, 1))
    total = (
        pad_p[:, :, :-2, 1:-1] + pad_p[:, :, 2:, 1:-1] + pad_p[:, :, 1:-1, :-2] + pad_p[:, :, 1:-1, 2:]
    )  # (B, G, Hp, Wp, s, p, p): sum of visible up/down/left/right patches
    count = pad_v[:, :, :-2, 1:-1] + pad_v[:, :, 2:, 1:-1] + pad_v[:, :, 1:-1, :-2] + pad_v[:, :, 1:-1, 2:]
    neighbour = total / count.clamp(min=1)[..., None, None, None]
    # back to (B, G*s, H, W), padded bands dropped
    neighbour = neighbour.permute(0, 1, 4, 2, 5, 3, 6).reshape(b, g * s, h, w)[:, :c]
    count_px = count.repeat_interleave(s, dim=1)[:, :c]
    count_px = count_px.repeat_interleave(p, dim=2).repeat_interleave(p, dim=3)  # (B, C, H, W)

    # fallback: per-band mean of the visible values of the image
    vis_px = ~pixel_mask
    n_vis = vis_px.sum(dim=(2, 3))  # (B, C)
    img_mean = (original * vis_px).sum(dim=(2, 3)) / n_vis.clamp(min=1)
    no_visible = n_vis == 0
    fallback_needed = (pixel_mask & (count_px == 0)).any(dim=(2, 3)) & no_visible  # (B, C)
    if bool(fallback_needed.any()):
        if band_means is None:
            bad = fallback_needed.nonzero().tolist()
            raise ValueError(
                f"(image, band) pairs {bad[:5]}{'...' if len(bad) > 5 else ''} have no visible value and no "
                "visible neighbour patch; pass band_means (training means) for this last fallback."
            )
        means = torch.as_tensor(band_means, dtype=original.dtype, device=original.device).flatten()
        if means.numel() != c:
            raise ValueError(f"band_means has {means.numel()} values but the cube has {c} bands.")
        img_mean = torch.where(no_visible, means.view(1, c).expand(b, c), img_mean)

    pred = torch.where(count_px > 0, neighbour, img_mean[:, :, None, None].expand(b, c, h, w))
    return torch.where(pixel_mask, pred, original)
