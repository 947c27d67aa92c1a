"""Report figures: right axes and titles, and a real PNG on disk."""

import pytest
import torch
from matplotlib.figure import Figure

from spectral_training.plots import (
    plot_error_per_band,
    plot_loss_curves,
    plot_reconstruction_grid,
    plot_spectra,
    rgb_band_indices,
)

WAVELENGTHS = [443.0, 490.0, 560.0, 665.0, 705.0]


def _save(fig, tmp_path, name, min_bytes=5_000):
    path = tmp_path / f"{name}.png"
    fig.savefig(path, dpi=60)
    assert path.stat().st_size >= min_bytes
    return path


def _cubes(b=3, c=5, h=16, w=16):
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    base = torch.stack([(k + 1) * 0.1 * (xx + yy) for k in range(c)])  # (C, H, W) smooth scene
    original = base[None] + 0.05 * torch.rand(b, c, h, w, generator=g)
    recon = original + 0.03 * torch.randn(b, c, h, w, generator=g)
    masked = torch.zeros(b, c, h, w, dtype=torch.bool)
    masked[:, :, :8, :8] = True
    masked[:, :, 8:, 8:] = True
    return original, recon, masked


def test_rgb_band_indices_picks_nearest_wavelengths():
    assert rgb_band_indices(WAVELENGTHS) == (3, 2, 0)  # 665, 560, 443 nm


def test_rgb_band_indices_fallback_is_used_and_validated():
    assert rgb_band_indices(None, fallback=(3, 2, 1), num_bands=13) == (3, 2, 1)
    with pytest.raises(ValueError, match="in \\[0, 4\\]"):
        rgb_band_indices(None, fallback=(5, 2, 1), num_bands=5)
    with pytest.raises(ValueError, match="needs wavelengths_nm or num_bands"):
        rgb_band_indices(None, fallback=(0, 1, 2))


def test_reconstruction_grid_layout_and_png(tmp_path):
    original, recon, masked = _cubes()
    masked_input = original.masked_fill(masked, float("nan"))
    fig = plot_reconstruction_grid(original, masked_input, recon, (3, 2, 0), n_samples=2, masked=masked,
                                   wavelengths_nm=WAVELENGTHS)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 2 * 3
    assert [ax.get_title() for ax in fig.axes[:3]] == ["Original", "Masked input (grey = masked)", "Reconstruction"]
    assert "665 nm" in fig.get_suptitle()
    _save(fig, tmp_path, "grid")


def test_reconstruction_grid_clips_rows_and_finds_mask_from_nans(tmp_path):
    original, recon, masked = _cubes(b=1)
    fig = plot_reconstruction_grid(original, original.masked_fill(masked, float("nan")), recon, (0, 1, 2), n_samples=4)
    assert len(fig.axes) == 3
    img = fig.axes[1].get_images()[0].get_array()
    assert img[0, 0].tolist() == [0.5, 0.5, 0.5]  # masked pixel drawn grey
    _save(fig, tmp_path, "grid1")


def test_error_per_band_with_wavelengths_and_baselines(tmp_path):
    fig = plot_error_per_band(
        [0.01, 0.02, 0.015, 0.03, 0.05], WAVELENGTHS,
        baselines={"band mean": [0.1, 0.2, 0.2, 0.3, 0.4], "neighbour patch": [0.05, 0.04, 0.06, 0.05, None]},
    )
    (ax,) = fig.axes
    assert ax.get_title() and ax.get_xlabel() == "wavelength (nm)" and "MSE" in ax.get_ylabel()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "model", "baseline: band mean", "baseline: neighbour patch"]
    _save(fig, tmp_path, "error")


def test_error_per_band_without_wavelengths_uses_band_index(tmp_path):
    fig = plot_error_per_band([0.1, 0.2, 0.3])
    assert fig.axes[0].get_xlabel() == "band index"
    _save(fig, tmp_path, "error_idx")


def test_spectra_solid_original_dashed_reconstruction(tmp_path):
    original, recon, _ = _cubes()
    fig = plot_spectra(original, recon, [(0, 2, 3), (1, 10, 12)], WAVELENGTHS)
    (ax,) = fig.axes
    assert "Spectra" in ax.get_title() and ax.get_xlabel() == "wavelength (nm)"
    styles = [(line.get_color(), line.get_linestyle()) for line in ax.get_lines()]
    assert styles == [("C0", "-"), ("C0", "--"), ("C1", "-"), ("C1", "--")]
    assert len(ax.get_legend().get_texts()) == 4  # 2 pixels + original + reconstruction
    _save(fig, tmp_path, "spectra")
    single = plot_spectra(original[0], recon[0], [(1, 1)])
    assert single.axes[0].get_xlabel() == "band index"


def test_loss_curves_with_lr_on_twin_axis(tmp_path):
    history = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1.2 / e, "lr": 1e-3 * e} for e in range(1, 6)]
    fig = plot_loss_curves(history)
    assert len(fig.axes) == 2
    assert fig.axes[0].get_title() == "Training curves" and fig.axes[1].get_ylabel() == "learning rate"
    _save(fig, tmp_path, "curves")


def test_loss_curves_single_epoch_without_val(tmp_path):
    fig = plot_loss_curves([{"epoch": 0, "train_loss": 0.5}])
    assert len(fig.axes) == 1
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["train loss"]
    _save(fig, tmp_path, "curves1", min_bytes=3_000)


def test_loss_curves_empty_history_says_so():
    fig = plot_loss_curves([])
    assert any("no epochs" in t.get_text() for t in fig.axes[0].texts)
