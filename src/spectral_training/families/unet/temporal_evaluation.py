"""Evaluating ``unet_temporal``: the model against persistence and linear interpolation, on the
same held-out dates, on the valid pixels of those dates only, in physical units.

For every series of the split the dataset fixes one held-out date (seeded by ``evaluation.seed``
and the sample id); the model, persistence (each pixel's nearest valid observation) and linear
interpolation (per pixel, between the nearest valid observations before and after) all predict
that date from the same other dates. Metrics (:class:`ReconstructionMetrics` with the held-out
date's valid pixels as the scored mask, plus the mean absolute error): MSE, MAE, PSNR (per band
with the band's train range), SAM (degrees, over valid pixels) and SSIM, overall and per band.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch.utils.data import default_collate
from tqdm.auto import tqdm

from spectral_training.cubes.data_version import dataset_version
from spectral_training.cubes.store import CubeStore
from spectral_training.families.base import checkpoint_path, empty_split_fallback
from spectral_training.families.unet.temporal import held_out_frame
from spectral_training.families.unet.temporal_data import TemporalSamples
from spectral_training.metrics.reconstruction import ReconstructionMetrics
from spectral_training.models.unet_temporal import context_slots, linear_interpolation, persistence, target_day
from spectral_training.plots.curves import plot_loss_curves
from spectral_training.plots.reconstruction import plot_error_per_band, rgb_band_indices
from spectral_training.plots.temporal import plot_temporal_prediction
from spectral_training.training.checkpoint import load_checkpoint

log = logging.getLogger(__name__)

EVALUATION_DEFAULTS = {"split": "test", "batch_size": 16, "checkpoint": "best", "use_ema": False, "seed": 0,
                       "plot_samples": 4, "rgb_fallback": [0, 1, 2], "show_progress": True}
METHODS = ("model", "persistence", "linear_interpolation")
_METRIC_NAME = re.compile(r"[^\w\-. /]")  # characters MLflow refuses in a metric name


class _AbsoluteError:
    """Per-band sums of |error| over the scored values (ReconstructionMetrics has no MAE)."""

    def __init__(self, num_bands: int) -> None:
        self.sums = torch.zeros(num_bands, dtype=torch.float64)
        self.counts = torch.zeros(num_bands, dtype=torch.float64)

    def update(self, truth: torch.Tensor, pred: torch.Tensor, scored: torch.Tensor) -> None:
        scored = scored.expand_as(truth)
        self.sums += ((pred.double() - truth.double()).abs() * scored).sum(dim=(0, 2, 3))
        self.counts += scored.sum(dim=(0, 2, 3)).double()

    def compute(self) -> tuple[float | None, list[float | None]]:
        total = float(self.counts.sum())
        per_band = [float(s / c) if c > 0 else None for s, c in zip(self.sums, self.counts)]
        return (float(self.sums.sum()) / total if total else None), per_band


def evaluate_temporal(family, store: CubeStore, sample_index: pd.DataFrame, band_stats: dict, manifest: dict,
                      params: Mapping[str, Any], history: list[dict]) -> tuple[dict, dict[str, float], dict]:
    """(report, flat numbers for MLflow, figures by plot name) of the manifest's checkpoint."""
    settings = {**EVALUATION_DEFAULTS, **(params.get("evaluation") or {})}
    path = Path(checkpoint_path(manifest, settings["checkpoint"]))
    kwargs = manifest["model_kwargs"]
    model = family.build_model(kwargs)
    checkpoint = load_checkpoint(path, model, use_ema=bool(settings["use_ema"]))
    model.eval()
    meta = checkpoint["metadata"]
    split = empty_split_fallback(sample_index, settings["split"], log)
    dataset = TemporalSamples(store, sample_index[sample_index["split"] == split], meta["band_stats"],
                              min_valid=kwargs["min_target_valid"], interior_only=kwargs["interior_only"],
                              seed=int(settings["seed"]))
    if len(dataset) == 0:
        raise ValueError(f"no series to evaluate in the {split} split of {store.path}")
    mean = torch.as_tensor(dataset.series.mean, dtype=torch.float64).view(1, -1, 1, 1)
    std = torch.as_tensor(dataset.series.std, dtype=torch.float64).view(1, -1, 1, 1)
    physical = lambda x: x.double() * std + mean  # noqa: E731  normalised -> the store's units
    num_bands = int(kwargs["num_bands"])
    data_range = [max(b["max"] - b["min"], 1e-6) for b in band_stats["bands"]]  # PSNR: each band's train range
    scores = {m: ReconstructionMetrics(num_bands, data_range, meta["band_names"], meta.get("wavelengths_nm"))
              for m in METHODS}
    absolute = {m: _AbsoluteError(num_bands) for m in METHODS}
    held_out, shown = [], {}
    batch_size = int(settings["batch_size"])
    with torch.no_grad():
        for start in tqdm(range(0, len(dataset), batch_size), desc="evaluate", unit="batch",
                          disable=not settings["show_progress"]):
            batch = default_collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
            args = (batch["cube"], batch["day_of_year"], batch["date_mask"], batch["valid"], batch["target_date"])
            truth, seen = held_out_frame(batch["cube"], batch["valid"], batch["target_date"])
            preds = {"model": model(*args)["pred"], "persistence": persistence(*args),
                     "linear_interpolation": linear_interpolation(*args)}
            truth_p, scored = physical(truth), seen[:, None].expand_as(truth)
            for name, pred in preds.items():
                scores[name].update(truth_p, physical(pred), scored)
                absolute[name].update(truth_p, physical(pred), scored)
            days = target_day(batch["day_of_year"], batch["target_date"])
            held_out += [{"sample_id": s, "date_index": int(t), "day_of_year": int(d), "valid_pixels": int(v)}
                         for s, t, d, v in zip(batch["sample_id"], batch["target_date"], days, seen.flatten(1).sum(1))]
            if not shown:
                k = int(settings["plot_samples"])
                values, observed, offsets = context_slots(*args, k=1)  # slot 0: the nearest earlier date
                shown = {"target": truth_p[:k], "valid": seen[:k], "days": days[:k].tolist(),
                         "context": physical(values[:k, 0]), "context_valid": observed[:k, 0],
                         "context_days": [int(d + o) if o != 0 else None for d, o in zip(days[:k], offsets[:k, 0])],
                         "predictions": {m: physical(p[:k]) for m, p in preds.items()}}
    results = {m: scores[m].compute() for m in METHODS}
    summary, per_band = {}, {}
    for m in METHODS:
        mae, mae_band = absolute[m].compute()
        o = results[m]["overall"]
        summary[m] = {"mse": o["mse"], "mae": mae, "sam_deg": o["sam_deg"], "psnr": o["psnr"], "ssim": o["ssim"]}
        per_band[m] = {"mse": results[m]["per_band"]["mse"], "mae": mae_band, "psnr": results[m]["per_band"]["psnr"]}
    band_names = list(meta["band_names"])
    table = [{"band": band_names[i], "wavelength_nm": (meta.get("wavelengths_nm") or [None] * num_bands)[i],
              **{f"{m}_{k}": per_band[m][k][i] for m in METHODS for k in ("mse", "mae", "psnr")}}
             for i in range(num_bands)]
    report = {
        "family": family.name, "split": split, "checkpoint": str(path), "run_name": manifest.get("run_name"),
        "checkpoint_epoch": int(checkpoint["progress"]["epoch"]) if "progress" in checkpoint else None,
        "data_version": dataset_version(sample_index), "num_series": len(dataset),
        "scored_pixels": int(results["model"]["counts"]["masked_pixels"]),
        "units": "physical (normalisation undone); valid pixels of the held-out date only",
        "summary": summary, "per_band": per_band, "per_band_table": table, "band_names": band_names,
        "settings": {"seed": int(settings["seed"]), "min_target_valid": kwargs["min_target_valid"],
                     "interior_only": kwargs["interior_only"], "context_dates": kwargs["context_dates"],
                     "residual": kwargs["residual"], "data_range": results["model"]["settings"]["data_range"]},
        "counts": results["model"]["counts"], "held_out": held_out,
    }
    rgb = rgb_band_indices(meta.get("wavelengths_nm"), fallback=tuple(settings["rgb_fallback"]), num_bands=num_bands)
    figures = {
        "temporal_prediction": plot_temporal_prediction(shown["target"], shown["valid"], shown["predictions"], rgb,
                                                        shown["days"], shown["context"], shown["context_days"],
                                                        shown["context_valid"]),
        "error_per_band": plot_error_per_band(
            per_band["model"]["mse"], meta.get("wavelengths_nm"),
            baselines={"persistence": per_band["persistence"]["mse"],
                       "linear interpolation": per_band["linear_interpolation"]["mse"]},
            value_label="MSE on valid pixels of the held-out date (physical units$^2$)"),
        "loss_curves": plot_loss_curves(history or checkpoint.get("history") or [],
                                        loss_label="MSE on the held-out date's valid pixels"),
    }
    values = {f"{m}/{k}": v for m, row in summary.items() for k, v in row.items() if v is not None}
    for m in METHODS:  # per band: eval.<method>/band/<index>_<name>/<metric>
        for key, per in per_band[m].items():
            values.update({f"{m}/band/{i:02d}_{_METRIC_NAME.sub('_', name)}/{key}": v
                           for i, (name, v) in enumerate(zip(band_names, per)) if v is not None})
    return report, values, figures
