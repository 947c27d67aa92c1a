"""Evaluate a pretrained MAE checkpoint on a split of the store, against two baselines.

Everything is scored in physical units (the normalisation is undone first), on the values the
model did not see, with the same masks for the model and the baselines:

* ``band_mean``: each masked value is its band's training mean;
* ``neighbour_patch``: each masked patch is the average of its visible spatial neighbours.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from torch import nn
from tqdm.auto import tqdm

from spectral_training.cubes.data_version import dataset_version
from spectral_training.cubes.dataset import NormalisedTileDataset
from spectral_training.cubes.store import CubeStore
from spectral_training.cubes.transforms import build_transforms
from spectral_training.families.base import checkpoint_path as manifest_checkpoint
from spectral_training.families.base import empty_split_fallback
from spectral_training.families.mae.model import build_mae_model
from spectral_training.families.mae.params import EvaluationParams
from spectral_training.metrics.baselines import band_mean_baseline, neighbour_patch_baseline
from spectral_training.metrics.reconstruction import ReconstructionMetrics
from spectral_training.plots.curves import plot_loss_curves
from spectral_training.plots.reconstruction import (
    plot_error_per_band,
    plot_reconstruction_grid,
    plot_spectra,
    rgb_band_indices,
)
from spectral_training.training.checkpoint import load_checkpoint

log = logging.getLogger(__name__)


def _token_mask(pixel_mask: torch.Tensor, spatial_patch: int, spectral_patch: int) -> torch.Tensor:
    """(B, C, H, W) pixel mask -> (B, L) token mask in the model's (group, row, col) order."""
    first = pixel_mask[:, ::spectral_patch, ::spatial_patch, ::spatial_patch]  # one value per token
    return first.reshape(first.shape[0], -1).to(torch.uint8)


def evaluate_mae(
    store: CubeStore,
    sample_index: pd.DataFrame,
    band_stats: dict,
    manifest: dict,
    params: EvaluationParams,
    history: list[dict] | None = None,
    build_model: Callable[[dict], nn.Module] = build_mae_model,
) -> tuple[dict, dict[str, Figure]]:
    """Metrics (model and baselines) and report figures for the manifest's checkpoint.

    ``build_model`` rebuilds the checkpoint's model from its ``model_kwargs``: any masked model
    with ``reconstruct(x, generator) -> (reconstruction, pixel mask)``, ``mask_ratio``,
    ``spatial_patch`` and ``spectral_patch`` is scored the same way (the U-Net MIM family uses it).

    The checkpoint's own band statistics undo the normalisation it was trained with;
    ``band_stats`` (the dataset's, with min/max) gives each band's data range for PSNR/SSIM.
    """
    checkpoint_path = Path(manifest_checkpoint(manifest, params.checkpoint))
    model_kwargs = manifest["model_kwargs"]
    model = build_model(model_kwargs)
    checkpoint = load_checkpoint(checkpoint_path, model, use_ema=params.use_ema)
    model.eval()
    meta = checkpoint["metadata"]
    stats = meta["band_stats"]
    eval_t = build_transforms(meta["transforms"]["eval"], stats, where="transforms.eval")

    split = empty_split_fallback(sample_index, params.split, log)
    dataset = NormalisedTileDataset(store, sample_index, split, eval_t)
    num_bands = len(stats["mean"])
    band_means = torch.tensor(stats["mean"], dtype=torch.float32)
    data_range = [max(b["max"] - b["min"], 1e-6) for b in band_stats["bands"]]
    wavelengths = meta.get("wavelengths_nm")
    scores = {name: ReconstructionMetrics(num_bands, data_range, meta["band_names"], wavelengths)
              for name in ("model", "band_mean", "neighbour_patch")}
    generator = torch.Generator().manual_seed(params.seed)
    kept: dict[str, torch.Tensor] = {}
    p, s = model.spatial_patch, model.spectral_patch
    batches = range(0, len(dataset), params.batch_size)
    with torch.no_grad():
        for n, start in enumerate(tqdm(batches, desc="evaluate", unit="batch", disable=not params.show_progress)):
            if params.max_batches is not None and n >= params.max_batches:
                break
            items = [dataset[i] for i in range(start, min(start + params.batch_size, len(dataset)))]
            x = torch.stack([it["cube"] for it in items])
            recon_n, pixel_mask = model.reconstruct(x, generator=generator)
            original = eval_t.normalise.inverse(x)
            recon = eval_t.normalise.inverse(recon_n.float())
            tokens = _token_mask(pixel_mask, p, s)
            scores["model"].update(original, recon, pixel_mask)
            scores["band_mean"].update(original, band_mean_baseline(original, pixel_mask, band_means), pixel_mask)
            scores["neighbour_patch"].update(
                original, neighbour_patch_baseline(original, tokens, p, s, band_means), pixel_mask)
            if not kept:
                k = params.plot_samples
                kept = {"original": original[:k], "recon": recon[:k], "mask": pixel_mask[:k]}
    if not kept:
        raise ValueError(f"no samples to evaluate in the {split} split of {store.path}")
    results = {name: metric.compute() for name, metric in scores.items()}
    summary = {
        name: {key: results[name]["overall"][key] for key in ("mse", "sam_deg", "psnr", "ssim")}
        for name in results
    }
    beats = {
        f"model_vs_{b}": {
            "mse": _better(summary["model"]["mse"], summary[b]["mse"], lower=True),
            "sam_deg": _better(summary["model"]["sam_deg"], summary[b]["sam_deg"], lower=True),
            "psnr": _better(summary["model"]["psnr"], summary[b]["psnr"], lower=False),
            "ssim": _better(summary["model"]["ssim"], summary[b]["ssim"], lower=False),
        }
        for b in ("band_mean", "neighbour_patch")
    }
    metrics = {
        "summary": summary,
        "model_beats_baseline": beats,
        "model": results["model"],
        "baselines": {"band_mean": results["band_mean"], "neighbour_patch": results["neighbour_patch"]},
        "split": split,
        "num_samples": int(results["model"]["counts"]["images"]),
        "mask_ratio": float(model.mask_ratio),
        "mask_seed": params.seed,
        "checkpoint": str(checkpoint_path),
        "checkpoint_epoch": int(checkpoint["progress"]["epoch"]) if "progress" in checkpoint else None,
        "run_name": manifest.get("run_name"),
        "data_version": dataset_version(sample_index),
        "store": str(store.path),
        "band_names": meta["band_names"],
        "wavelengths_nm": wavelengths,
        "units": "physical (normalisation undone)",
    }
    figures = report_figures(kept, results, wavelengths, params, history or checkpoint.get("history") or [])
    return metrics, figures


def _better(model: float | None, baseline: float | None, *, lower: bool) -> bool | None:
    if model is None or baseline is None:
        return None
    return model < baseline if lower else model > baseline


def report_figures(kept: dict, results: dict, wavelengths: list[float] | None, params: EvaluationParams,
                   history: list[dict]) -> dict[str, Figure]:
    original, recon, mask = kept["original"], kept["recon"], kept["mask"]
    num_bands = original.shape[1]
    rgb = rgb_band_indices(wavelengths, fallback=params.rgb_fallback, num_bands=num_bands)
    masked_input = original.masked_fill(mask, float("nan"))
    h, w = original.shape[-2:]
    rng = np.random.default_rng(params.seed)
    pixels = []
    for _ in range(params.spectra_pixels):
        b = int(rng.integers(0, original.shape[0]))
        masked_pixels = torch.nonzero(mask[b].any(dim=0))
        r, c = (masked_pixels[int(rng.integers(0, len(masked_pixels)))].tolist() if len(masked_pixels)
                else (int(rng.integers(0, h)), int(rng.integers(0, w))))
        pixels.append((b, r, c))
    baselines = {name: results[name]["per_band"]["mse"] for name in ("band_mean", "neighbour_patch")}
    return {
        "reconstruction_grid": plot_reconstruction_grid(original, masked_input, recon, rgb,
                                                            n_samples=params.plot_samples, masked=mask,
                                                            wavelengths_nm=wavelengths),
        "error_per_band": plot_error_per_band(results["model"]["per_band"]["mse"], wavelengths, baselines),
        "spectra": plot_spectra(original, recon, pixels, wavelengths),
        "loss_curves": plot_loss_curves(history),
    }
