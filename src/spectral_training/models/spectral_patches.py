"""How the spectral MAE cuts a cube into 3-D tokens, and puts them back.

A token is a 3-D patch of the cube: ``spatial_patch x spatial_patch`` pixels by
``spectral_patch`` bands. A cube ``(C, H, W)`` gives ``L = G * N`` tokens with
``G = ceil(C / spectral_patch)`` band groups and ``N = (H / spatial_patch) * (W / spatial_patch)``
spatial patches; reference set-up: 30 bands, 500 px, 25x25x5 patches -> 6 * 400 = 2400 tokens.

Conventions (the MAE and its loss use them):

* token order is band-group-major: token ``l = g * N + i * grid_w + j`` is band group ``g`` at
  patch row ``i``, column ``j``;
* a patch vector (``patch_dim = spectral_patch * spatial_patch**2``) is band-major: element
  ``b * p * p + y * p + x`` is band ``b`` of the group at pixel ``(y, x)`` of the patch;
* when ``C`` is not a multiple of ``spectral_patch`` the band axis is zero-padded up to
  ``G * spectral_patch``; padded bands are zeros in the patches, never scored by the loss, and
  dropped by :meth:`SpectralPatchGrid.unpatchify`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def _size_hint(size: int, patch: int) -> str:
    """'500 or 525 px (or spatial_patch 20, 25, ...)' for an error message."""
    lower = (size // patch) * patch
    fits = [s for s in (lower, lower + patch) if s > 0]
    divisors = [d for d in range(2, min(size, 64) + 1) if size % d == 0]
    hint = f"nearest sizes that fit spatial_patch={patch}: {' or '.join(map(str, fits))} px (crop or pad the tiles)"
    if divisors:
        hint += f"; or choose a spatial_patch that divides {size}: {', '.join(map(str, divisors[:12]))}"
    return hint


@dataclass(frozen=True)
class SpectralPatchGrid:
    """The token geometry of ``(num_bands, H, W)`` cubes cut into ``spectral_patch`` x
    ``spatial_patch`` x ``spatial_patch`` patches; a size that does not fit is a ValueError
    with the nearest sizes that do."""

    num_bands: int
    image_size: tuple[int, int]
    spatial_patch: int
    spectral_patch: int

    def __post_init__(self) -> None:
        for name in ("num_bands", "spatial_patch", "spectral_patch"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        for axis, size in zip(("height", "width"), self.image_size):
            if size % self.spatial_patch != 0:
                raise ValueError(f"image {axis} {size} px is not a multiple of spatial_patch={self.spatial_patch}; "
                                 + _size_hint(size, self.spatial_patch))

    @property
    def num_groups(self) -> int:
        """G, band groups (the last one padded when C is not a multiple of spectral_patch)."""
        return -(-self.num_bands // self.spectral_patch)

    @property
    def padded_bands(self) -> int:
        return self.num_groups * self.spectral_patch

    @property
    def num_pad_bands(self) -> int:
        return self.padded_bands - self.num_bands

    @property
    def grid_size(self) -> tuple[int, int]:
        return self.image_size[0] // self.spatial_patch, self.image_size[1] // self.spatial_patch

    @property
    def num_spatial(self) -> int:
        """N, spatial patches."""
        return self.grid_size[0] * self.grid_size[1]

    @property
    def num_patches(self) -> int:
        """L = G * N, tokens."""
        return self.num_groups * self.num_spatial

    @property
    def patch_dim(self) -> int:
        return self.spectral_patch * self.spatial_patch**2

    def band_valid(self) -> torch.Tensor:
        """``(G, s)`` bool: True on real bands, False on padding."""
        return (torch.arange(self.padded_bands) < self.num_bands).reshape(self.num_groups, self.spectral_patch)

    def check_input(self, x: torch.Tensor) -> None:
        expected = (self.num_bands, *self.image_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"MAE input must be (B, {expected[0]}, {expected[1]}, {expected[2]}) = (batch, bands, height, width) "
                f"as built; got {tuple(x.shape)}"
            )

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> ``(B, L, patch_dim)``; padded bands (if any) are zeros."""
        self.check_input(x)
        B = x.shape[0]
        s, p = self.spectral_patch, self.spatial_patch
        (gh, gw), G = self.grid_size, self.num_groups
        if self.num_pad_bands:
            x = F.pad(x, (0, 0, 0, 0, 0, self.num_pad_bands))  # (B, G*s, H, W)
        x = x.reshape(B, G, s, gh, p, gw, p)
        x = x.permute(0, 1, 3, 5, 2, 4, 6)  # (B, G, gh, gw, s, p, p)
        return x.reshape(B, self.num_patches, self.patch_dim)  # (B, L, s*p*p)

    def unpatchify(self, patches: torch.Tensor) -> torch.Tensor:
        """``(B, L, patch_dim)`` -> ``(B, C, H, W)``; band padding is dropped."""
        B = patches.shape[0]
        s, p = self.spectral_patch, self.spatial_patch
        (gh, gw), G = self.grid_size, self.num_groups
        x = patches.reshape(B, G, gh, gw, s, p, p)
        x = x.permute(0, 1, 4, 2, 5, 3, 6)  # (B, G, s, gh, p, gw, p)
        x = x.reshape(B, self.padded_bands, gh * p, gw * p)  # (B, G*s, H, W)
        return x[:, : self.num_bands]  # (B, C, H, W)

    def split(self, t: torch.Tensor) -> torch.Tensor:
        """``(B, L, patch_dim)`` -> view ``(B, G, N, s, p*p)``, the loss layout."""
        return t.reshape(t.shape[0], self.num_groups, self.num_spatial, self.spectral_patch, self.spatial_patch**2)

    def patch_stats(self, patches: torch.Tensor, band_valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-patch mean and unbiased variance over real bands only (``band_valid``, on the
        patches' device): two ``(B, L, 1)`` float32."""
        t = patches.float()
        if not self.num_pad_bands:
            return t.mean(dim=-1, keepdim=True), t.var(dim=-1, keepdim=True)
        B, q = t.shape[0], self.spatial_patch**2
        t5 = self.split(t)  # (B, G, N, s, q)
        v = band_valid[None, :, None, :, None].to(t.dtype)  # (1, G, 1, s, 1)
        n = v.sum(dim=3, keepdim=True) * q  # (1, G, 1, 1, 1) real elements per token
        mean = (t5 * v).sum(dim=(3, 4), keepdim=True) / n  # (B, G, N, 1, 1)
        var = ((t5 - mean).square() * v).sum(dim=(3, 4), keepdim=True) / (n - 1).clamp_min(1.0)
        return mean.reshape(B, self.num_patches, 1), var.reshape(B, self.num_patches, 1)
