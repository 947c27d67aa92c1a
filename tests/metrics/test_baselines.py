"""Baselines and the token -> pixel mask expansion on hand-made patch grids."""

import pytest
import torch

from spectral_training.metrics.baselines import (
    band_mean_baseline,
    neighbour_patch_baseline,
    token_mask_to_pixel_mask,
)


def _patch_grid_cube():
    """One band, 4 x 4 px, 2 x 2 px patches -> a 2 x 2 patch grid with distinct values."""
    x = torch.arange(16, dtype=torch.float32).reshape(1, 1, 4, 4)
    return x


def _patch(x, r, c, p=2):
    return x[..., r * p : (r + 1) * p, c * p : (c + 1) * p]


def test_band_mean_fills_masked_values_with_the_given_means():
    x = torch.rand(2, 3, 4, 4)
    masked = torch.rand(2, 3, 4, 4) < 0.5
    out = band_mean_baseline(x, masked, [10.0, 20.0, 30.0])
    for c, mean in enumerate([10.0, 20.0, 30.0]):
        assert torch.all(out[:, c][masked[:, c]] == mean)
    assert torch.equal(out[~masked], x[~masked])


def test_band_mean_rejects_wrong_length():
    with pytest.raises(ValueError, match="2 values but the cube has 3 bands"):
        band_mean_baseline(torch.zeros(1, 3, 2, 2), torch.ones(1, 3, 2, 2, dtype=torch.bool), [1.0, 2.0])


def test_neighbour_baseline_averages_visible_neighbours_pixelwise():
    x = _patch_grid_cube()
    mask = torch.tensor([[1, 0, 0, 0]])  # token (0, 0) masked
    out = neighbour_patch_baseline(x, mask, spatial_patch=2, spectral_patch=1)
    expected = (_patch(x, 0, 1) + _patch(x, 1, 0)) / 2  # right and down neighbours
    assert torch.equal(_patch(out, 0, 0), expected)
    # visible patches are copied
    for r, c in [(0, 1), (1, 0), (1, 1)]:
        assert torch.equal(_patch(out, r, c), _patch(x, r, c))


def test_neighbour_baseline_ignores_masked_neighbours():
    x = _patch_grid_cube()
    mask = torch.tensor([[1, 1, 0, 0]])  # tokens (0, 0) and (0, 1)
    out = neighbour_patch_baseline(x, mask, 2, 1)
    assert torch.equal(_patch(out, 0, 0), _patch(x, 1, 0))
    assert torch.equal(_patch(out, 0, 1), _patch(x, 1, 1))


def test_neighbour_baseline_falls_back_to_image_band_mean():
    x = _patch_grid_cube()
    mask = torch.tensor([[1, 1, 1, 0]])  # only (1, 1) visible; (0, 0) has no visible neighbour
    out = neighbour_patch_baseline(x, mask, 2, 1)
    visible_mean = _patch(x, 1, 1).mean()
    assert torch.allclose(_patch(out, 0, 0), visible_mean.expand(1, 1, 2, 2))
    assert torch.equal(_patch(out, 0, 1), _patch(x, 1, 1))  # (1, 1) is its down neighbour


def test_neighbour_baseline_uses_band_means_when_a_band_has_nothing_visible():
    x = _patch_grid_cube()
    mask = torch.ones(1, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="pass band_means"):
        neighbour_patch_baseline(x, mask, 2, 1)
    out = neighbour_patch_baseline(x, mask, 2, 1, band_means=[7.5])
    assert torch.all(out == 7.5)


def test_neighbour_baseline_keeps_spectral_groups_apart_and_drops_padded_bands():
    # 3 bands, spectral_patch 2 -> groups {0, 1} and {2, pad}; 2 x 2 patch grid
    x = torch.stack([torch.full((4, 4), v) for v in (1.0, 2.0, 3.0)])[None].clone()
    x[0, :, 2:, :2] += 10.0  # patch (1, 0) brighter in every band
    mask = torch.zeros(1, 8, dtype=torch.long)
    mask[0, 0] = 1  # group 0, token (0, 0)
    out = neighbour_patch_baseline(x, mask, 2, 2)
    assert out.shape == x.shape
    # bands 0, 1 at (0, 0): mean of right (v) and down (v + 10) patches
    assert torch.allclose(_patch(out, 0, 0)[0, :2], torch.tensor([6.0, 7.0]).view(2, 1, 1).expand(2, 2, 2))
    assert torch.equal(out[0, 2], x[0, 2])  # group 1 untouched


def test_token_mask_to_pixel_mask_with_band_padding():
    # C = 3, spectral_patch 2 -> G = 2 (band 3 is padding); 4 x 4 px, p = 2 -> 2 x 2 grid, L = 8
    tokens = torch.zeros(1, 8, dtype=torch.long)
    tokens[0, 1 * 4 + 0 * 2 + 1] = 1  # g = 1, r = 0, c = 1
    pix = token_mask_to_pixel_mask(tokens, 3, (4, 4), 2, 2)
    assert pix.shape == (1, 3, 4, 4) and pix.dtype == torch.bool
    expected = torch.zeros(1, 3, 4, 4, dtype=torch.bool)
    expected[0, 2, :2, 2:] = True
    assert torch.equal(pix, expected)


def test_token_mask_to_pixel_mask_groups_rows_cols_order():
    tokens = torch.zeros(2, 2 * 2 * 3, dtype=torch.long)  # 4 bands / 2, 4 x 6 px / 2 -> 2 x 3 grid
    tokens[1, 0 * 6 + 1 * 3 + 2] = 1  # sample 1, g 0, r 1, c 2
    pix = token_mask_to_pixel_mask(tokens, 4, (4, 6), 2, 2)
    assert pix[1, :2, 2:4, 4:6].all() and pix.sum() == 2 * 2 * 2
    assert not pix[0].any()


def test_token_mask_to_pixel_mask_explains_wrong_length():
    with pytest.raises(ValueError, match=r"expected \(B, 8\)"):
        token_mask_to_pixel_mask(torch.zeros(1, 5), 3, (4, 4), 2, 2)
    with pytest.raises(ValueError, match="not a multiple of spatial_patch"):
        token_mask_to_pixel_mask(torch.zeros(1, 5), 3, (5, 4), 2, 2)
