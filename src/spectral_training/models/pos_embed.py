"""Fixed sin-cos position embeddings for spectral masked autoencoders.

A token of the spectral MAE is a 3-D patch: a ``spatial_patch x spatial_patch`` pixel window
by ``spectral_patch`` bands. Its position has two independent parts:

* **spatial**: the patch's (row, column) on the patch grid, encoded with the 2-D sin-cos of
  the MAE reference (half of the dims for the row, half for the column);
* **spectral**: the band group's index ``0..G-1``, or, when the band wavelengths are known,
  the mean wavelength of the group in nanometres. Wavelength positions make embeddings of two
  sensors comparable: a group centred on 665 nm gets the same code on every sensor.

The two parts are **concatenated** (``spatial_dim + spectral_dim == embed_dim``) rather than
added: the parts live in separate dimensions, so neither can alias the other (with addition,
group 3 at row 0 and group 0 at row 3 share frequencies), and each part keeps its own
1-D/2-D structure intact. ``spectral_dim`` defaults to a quarter of ``embed_dim`` (as the
channel-group code of SatMAE takes a slice of the width), see :func:`split_embed_dim`.

All functions work for any ``embed_dim``: an odd width gets one zero column, never an error.
Computed in float64 with plain torch, returned as float32.
"""

from __future__ import annotations

from typing import Sequence

import torch

__all__ = [
    "sincos_1d",
    "sincos_2d",
    "split_embed_dim",
    "spectral_positions",
    "spectral_spatial_pos_embed",
]


def sincos_1d(dim: int, positions: torch.Tensor | Sequence[float]) -> torch.Tensor:
    """1-D sin-cos embedding of ``positions`` (any real values, e.g. indices or nanometres).

    Args:
        dim: output width; ``dim // 2`` frequencies ``1 / 10000 ** (k / (dim // 2))``, the sines in
            the first half and the cosines in the second. An odd ``dim`` ends with a zero column.
        positions: ``(M,)`` positions.

    Returns:
        ``(M, dim)`` float32.
    """
    pos = torch.as_tensor(positions, dtype=torch.float64).reshape(-1)  # (M,)
    half = dim // 2
    out = torch.zeros(pos.numel(), dim, dtype=torch.float64)
    if half > 0:
        omega = torch.arange(half, dtype=torch.float64) / half
        omega = 1.0 / 10000.0**omega  # (half,)
        angles = pos[:, None] * omega[None, :]  # (M, half)
        out[:, :half] = torch.sin(angles)
        out[:, half : 2 * half] = torch.cos(angles)
    return out.float()


def sincos_2d(dim: int, grid_h: int, grid_w: int) -> torch.Tensor:
    """2-D sin-cos embedding of a ``grid_h x grid_w`` patch grid, rows-major order.

    The first ``dim // 2`` dims encode the row, the rest the column (each with
    :func:`sincos_1d`), so any ``dim`` works.

    Returns:
        ``(grid_h * grid_w, dim)`` float32; row ``i * grid_w + j`` is patch ``(i, j)``.
    """
    dim_h = dim // 2
    rows = torch.arange(grid_h, dtype=torch.float64).repeat_interleave(grid_w)  # (h*w,)
    cols = torch.arange(grid_w, dtype=torch.float64).repeat(grid_h)  # (h*w,)
    return torch.cat([sincos_1d(dim_h, rows), sincos_1d(dim - dim_h, cols)], dim=1)


def split_embed_dim(embed_dim: int, spectral_dim: int | None = None) -> tuple[int, int]:
    """Split ``embed_dim`` into ``(spatial_dim, spectral_dim)`` for concatenation.

    Default ``spectral_dim``: a quarter of the width rounded down to an even number (at least 2
    when ``embed_dim >= 4``), e.g. 192 -> (144, 48), 768 -> (576, 192), 32 -> (24, 8).
    """
    if spectral_dim is None:
        spectral_dim = (embed_dim // 4) // 2 * 2
        if spectral_dim == 0 and embed_dim >= 4:
            spectral_dim = 2
    if not 0 <= spectral_dim < embed_dim:
        raise ValueError(
            f"spectral_dim={spectral_dim} must be in [0, embed_dim={embed_dim}); "
            "leave it None for a quarter of embed_dim"
        )
    return embed_dim - spectral_dim, spectral_dim


def spectral_positions(
    num_bands: int,
    spectral_patch: int,
    wavelengths_nm: Sequence[float] | torch.Tensor | None = None,
) -> torch.Tensor:
    """Position of each spectral group: its index, or the mean wavelength of its real bands.

    Band padding (when ``num_bands`` is not a multiple of ``spectral_patch``) is ignored: the
    last group's wavelength is the mean over the bands it really holds.

    Returns:
        ``(G,)`` float64 with ``G = ceil(num_bands / spectral_patch)``.
    """
    num_groups = -(-num_bands // spectral_patch)
    if wavelengths_nm is None:
        return torch.arange(num_groups, dtype=torch.float64)
    wl = torch.as_tensor(wavelengths_nm, dtype=torch.float64).reshape(-1)
    if wl.numel() != num_bands:
        raise ValueError(
            f"wavelengths_nm has {wl.numel()} values but the cube has {num_bands} bands; "
            "give one wavelength (nm) per band, in band order"
        )
    if not torch.isfinite(wl).all():
        raise ValueError("wavelengths_nm holds non-finite values; give one finite nm value per band")
    return torch.stack([chunk.mean() for chunk in wl.split(spectral_patch)])  # (G,)


def spectral_spatial_pos_embed(
    embed_dim: int,
    grid_h: int,
    grid_w: int,
    num_bands: int,
    spectral_patch: int,
    wavelengths_nm: Sequence[float] | torch.Tensor | None = None,
    cls_token: bool = True,
    spectral_dim: int | None = None,
) -> torch.Tensor:
    """Position embedding of every token of a spectral MAE, in the model's token order.

    Token order is spectral-group-major: token ``g * grid_h * grid_w + i * grid_w + j`` is band
    group ``g`` at patch ``(i, j)``. Each row is ``concat(spatial(i, j), spectral(g))`` with
    widths from :func:`split_embed_dim`.

    Returns:
        ``(1 + L, embed_dim)`` float32 with a leading zero row for the cls token when
        ``cls_token`` (else ``(L, embed_dim)``), ``L = G * grid_h * grid_w``.
    """
    spatial_dim, spec_dim = split_embed_dim(embed_dim, spectral_dim)
    spatial = sincos_2d(spatial_dim, grid_h, grid_w)  # (N, spatial_dim), N = h*w
    spectral = sincos_1d(spec_dim, spectral_positions(num_bands, spectral_patch, wavelengths_nm))  # (G, spec_dim)
    num_groups, n = spectral.shape[0], spatial.shape[0]
    emb = torch.cat(
        [
            spatial[None].expand(num_groups, n, spatial_dim),
            spectral[:, None].expand(num_groups, n, spec_dim),
        ],
        dim=2,
    ).reshape(num_groups * n, embed_dim)  # (L, D)
    if cls_token:
        emb = torch.cat([torch.zeros(1, embed_dim), emb], dim=0)  # (1 + L, D)
    return emb
