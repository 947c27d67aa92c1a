"""Report figures (matplotlib ``Figure`` objects, no pyplot state, no Kedro)."""

from spectral_training.plots.curves import plot_loss_curves
from spectral_training.plots.reconstruction import (
    plot_error_per_band,
    plot_reconstruction_grid,
    plot_spectra,
    rgb_band_indices,
)

__all__ = [
    "plot_error_per_band",
    "plot_loss_curves",
    "plot_reconstruction_grid",
    "plot_spectra",
    "rgb_band_indices",
]
