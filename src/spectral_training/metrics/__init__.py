"""Reconstruction metrics and baselines (plain PyTorch, no Kedro)."""

from spectral_training.metrics.baselines import (
    band_mean_baseline,
    neighbour_patch_baseline,
    token_mask_to_pixel_mask,
)
from spectral_training.metrics.reconstruction import (
    ReconstructionMetrics,
    compose_reconstruction,
    flatten_metrics,
    ssim_window,
)

__all__ = [
    "ReconstructionMetrics",
    "band_mean_baseline",
    "compose_reconstruction",
    "flatten_metrics",
    "neighbour_patch_baseline",
    "ssim_window",
    "token_mask_to_pixel_mask",
]
