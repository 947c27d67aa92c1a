"""Fixed sin-cos position embeddings: shapes for any width, separability, wavelength positions."""

import math

import pytest
import torch

from spectral_training.models.pos_embed import (
    sincos_1d,
    sincos_2d,
    spectral_positions,
    spectral_spatial_pos_embed,
    split_embed_dim,
)


def test_sincos_1d_is_sin_then_cos_of_position():
    emb = sincos_1d(6, [0.0, 2.0])  # 3 frequencies: 1, 10000**-1/3, 10000**-2/3
    assert emb.shape == (2, 6) and emb.dtype == torch.float32
    assert torch.equal(emb[0], torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0, 1.0]))
    assert emb[1, 0].item() == pytest.approx(math.sin(2.0), abs=1e-6)
    assert emb[1, 3].item() == pytest.approx(math.cos(2.0), abs=1e-6)


@pytest.mark.parametrize("dim", [1, 5, 30, 31, 32, 192])
def test_full_embedding_has_requested_width_for_any_dim(dim):
    emb = spectral_spatial_pos_embed(dim, grid_h=3, grid_w=2, num_bands=7, spectral_patch=3)
    assert emb.shape == (1 + 3 * 3 * 2, dim)  # cls + G * h * w, G = ceil(7 / 3)
    assert torch.equal(emb[0], torch.zeros(dim))  # cls row
    assert torch.isfinite(emb).all()


def test_sincos_2d_distinct_rows():
    emb = sincos_2d(16, 3, 4)
    assert emb.shape == (12, 16)
    assert torch.unique(emb, dim=0).shape[0] == 12


def test_embedding_is_spatial_then_spectral_concatenated():
    dim, (gh, gw) = 32, (2, 3)
    spatial_dim, spectral_dim = split_embed_dim(dim)
    emb = spectral_spatial_pos_embed(dim, gh, gw, num_bands=6, spectral_patch=2, cls_token=False)
    emb = emb.reshape(3, gh * gw, dim)  # (G, N, D), band-group-major token order
    # spatial part identical across band groups, spectral part identical across positions
    assert torch.equal(emb[0, :, :spatial_dim], emb[2, :, :spatial_dim])
    assert torch.equal(emb[1, 0, spatial_dim:], emb[1, 5, spatial_dim:])
    assert not torch.equal(emb[0, 0, spatial_dim:], emb[1, 0, spatial_dim:])
    assert spatial_dim + spectral_dim == dim


def test_wavelength_positions_differ_from_index_positions():
    wl = [450.0, 550.0, 650.0, 750.0]
    by_index = spectral_spatial_pos_embed(32, 2, 2, num_bands=4, spectral_patch=2)
    by_nm = spectral_spatial_pos_embed(32, 2, 2, num_bands=4, spectral_patch=2, wavelengths_nm=wl)
    assert not torch.allclose(by_index, by_nm)


def test_equal_group_wavelengths_give_equal_embeddings_across_sensors():
    # sensor A's 2nd group and sensor B's 1st group are both centred on 665 nm
    a = spectral_spatial_pos_embed(32, 2, 2, num_bands=4, spectral_patch=2, wavelengths_nm=[490, 560, 660, 670], cls_token=False)
    b = spectral_spatial_pos_embed(32, 2, 2, num_bands=2, spectral_patch=2, wavelengths_nm=[655, 675], cls_token=False)
    assert torch.equal(a[4:8], b[0:4])  # group 1 of A (tokens 4..7) == group 0 of B


def test_padded_group_position_is_mean_of_its_real_bands():
    pos = spectral_positions(num_bands=5, spectral_patch=2, wavelengths_nm=[400, 500, 600, 700, 900])
    assert pos.tolist() == [450.0, 650.0, 900.0]
    assert spectral_positions(5, 2).tolist() == [0.0, 1.0, 2.0]


def test_wavelength_count_must_match_bands():
    with pytest.raises(ValueError, match="3 values but the cube has 4 bands"):
        spectral_positions(4, 2, wavelengths_nm=[400, 500, 600])
