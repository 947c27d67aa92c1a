"""Evaluating the SITS families on a split.

Classifier: accuracy, macro-F1, per-class metrics, the confusion matrix, per-class mean NDVI
curves over day of year (from the stored reflectances, red and NIR found by band name or
wavelength) and the cls token's attention over dates. Pretraining: masked-reconstruction MSE on
hidden valid values against a per-pixel temporal-mean baseline, per band.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import default_collate
from tqdm.auto import tqdm

from spectral_training.cubes.data_version import dataset_version
from spectral_training.cubes.store import CubeStore
from spectral_training.families.base import checkpoint_path, empty_split_fallback, seeded
from spectral_training.families.classifier.labels import LabelSpace, labelled_index
from spectral_training.families.sits.data import SitsSamples, split_rows
from spectral_training.metrics.classification import ClassificationMetrics, scalar_summary
from spectral_training.metrics.series import class_curves, date_means, ndvi_bands
from spectral_training.models.sits_former import random_block_mask
from spectral_training.plots.classification import plot_confusion_matrix
from spectral_training.plots.curves import plot_loss_curves, plot_metric_curves
from spectral_training.plots.reconstruction import plot_error_per_band
from spectral_training.plots.series import plot_class_curves, plot_date_attention
from spectral_training.training.checkpoint import load_checkpoint

log = logging.getLogger(__name__)

CLASSIFIER_DEFAULTS = {"split": "test", "batch_size": 16, "checkpoint": "best", "use_ema": False, "curve_bins": 24,
                       "show_progress": True}
PRETRAIN_DEFAULTS = {"split": "test", "batch_size": 16, "checkpoint": "best", "use_ema": False, "seed": 0,
                     "show_progress": True}


def _batches(dataset: SitsSamples, batch_size: int, show: bool, desc: str):
    for start in tqdm(range(0, len(dataset), batch_size), desc=desc, unit="batch", disable=not show):
        yield default_collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])


def evaluate_sits_classifier(family, store: CubeStore, sample_index: pd.DataFrame, manifest: dict,
                             params: Mapping[str, Any], history: list[dict]):
    """(report, flat numbers for MLflow, figures by plot name) of the manifest's checkpoint."""
    settings = {**CLASSIFIER_DEFAULTS, **(params.get("evaluation") or {})}
    path = Path(checkpoint_path(manifest, settings["checkpoint"]))
    model = family.build_model({**manifest["model_kwargs"], "pretrained": None})  # weights come from the checkpoint
    checkpoint = load_checkpoint(path, model, use_ema=bool(settings["use_ema"]))
    model.eval()
    meta = checkpoint["metadata"]
    space = LabelSpace.from_dict(meta["label_space"])
    index = labelled_index(sample_index, space)
    split = empty_split_fallback(index, settings["split"], log)
    rows = split_rows(index, split)
    dataset = SitsSamples(store, rows, meta["band_stats"])
    if len(dataset) == 0:
        raise ValueError(f"no labelled series to evaluate in the {split} split of {store.path}")

    scores = ClassificationMetrics(space.num_classes, list(space.names))
    attention, doys, masks, labels = [], [], [], []
    example = None
    with torch.no_grad():
        for batch in _batches(dataset, int(settings["batch_size"]), settings["show_progress"], "evaluate"):
            tokens, per_layer = model.forward_features(batch["cube"], batch["day_of_year"], batch["date_mask"],
                                                       return_attention=True)
            logits = model.head(tokens[:, 0])
            scores.update(logits.float(), batch["label"])
            attention.append(per_layer[:, -1].float().numpy())  # (B, T) last layer
            doys.append(batch["day_of_year"].numpy())
            masks.append(batch["date_mask"].numpy())
            labels.append(batch["label"].numpy())
            if example is None:
                real = batch["date_mask"][0]
                example = {"day_of_year": batch["day_of_year"][0][real].numpy(),
                           "per_layer": per_layer[0][:, real].float().numpy(),
                           "title": f"{batch['sample_id'][0]}: true {space.names[int(batch['label'][0])]}, "
                                    f"predicted {space.names[int(logits[0].argmax())]} (attention per layer)"}
    result = scores.compute()
    doy, mask, label = np.concatenate(doys), np.concatenate(masks), np.concatenate(labels)
    bins = int(settings["curve_bins"])
    attention_curves = class_curves(np.concatenate(attention), doy, mask, label, space.num_classes, bins)

    bands = ndvi_bands(meta.get("band_names"), meta.get("wavelengths_nm"))
    value_label = "NDVI" if bands else "mean reflectance over bands"
    store_rows = rows["store_index"].to_numpy(dtype=np.int64)
    values = np.stack([date_means(store.read_one(int(i)), store.read_valid_one(int(i)), bands) for i in store_rows])
    curves = class_curves(values, doy, mask, label, space.num_classes, bins)
    figures = {
        "confusion_matrix": plot_confusion_matrix(result["confusion_matrix"], list(space.names)),
        "class_curves": plot_class_curves(curves, list(space.names), value_label),
        "date_attention": plot_date_attention(attention_curves, list(space.names), example),
        "loss_curves": plot_loss_curves(history or checkpoint.get("history") or [], loss_label="cross-entropy"),
        "metric_curves": plot_metric_curves(history or checkpoint.get("history") or [],
                                            ["val_accuracy", "val_macro_f1"], f"{family.name}: validation metrics"),
    }
    report = {
        **result,
        "split": split,
        "checkpoint": str(path),
        "checkpoint_epoch": int(checkpoint["progress"]["epoch"]) if "progress" in checkpoint else None,
        "run_name": manifest.get("run_name"),
        "family": family.name,
        "pretrained_checkpoint": meta.get("pretrained_checkpoint"),
        "data_version": dataset_version(sample_index),
        "class_names": list(space.names),
        "label_space": space.to_dict(),
        "band_names": meta.get("band_names"),
        "curves": {"value": value_label, "ndvi_bands": list(bands) if bands else None,
                   "day_of_year": curves["bin_centres"].tolist(),
                   "mean": _listed(curves["mean"]), "attention_mean": _listed(attention_curves["mean"])},
    }
    return report, scalar_summary(result), figures


def _listed(array: np.ndarray) -> list:
    """NaN -> None, so the JSON report stays valid."""
    return [[None if not np.isfinite(v) else float(v) for v in row] for row in np.asarray(array, dtype=float)]


def evaluate_sits_pretrain(family, store: CubeStore, sample_index: pd.DataFrame, manifest: dict,
                           params: Mapping[str, Any], history: list[dict]):
    """Masked-reconstruction MSE (normalised units) per band on hidden valid values, against the
    per-pixel temporal mean of the values left visible (same masks, drawn with ``evaluation.seed``)."""
    settings = {**PRETRAIN_DEFAULTS, **(params.get("evaluation") or {})}
    path = Path(checkpoint_path(manifest, settings["checkpoint"]))
    model = family.build_model(manifest["model_kwargs"])
    checkpoint = load_checkpoint(path, model, use_ema=bool(settings["use_ema"]))
    model.eval()
    meta = checkpoint["metadata"]
    split = empty_split_fallback(sample_index, settings["split"], log)
    dataset = SitsSamples(store, split_rows(sample_index, split), meta["band_stats"])
    if len(dataset) == 0:
        raise ValueError(f"no series to evaluate in the {split} split of {store.path}")
    generator = seeded(int(settings["seed"]))
    c = int(manifest["model_kwargs"]["in_channels"])
    sums = {"model": torch.zeros(c, dtype=torch.float64), "temporal_mean": torch.zeros(c, dtype=torch.float64)}
    counts = torch.zeros(c, dtype=torch.float64)
    with torch.no_grad():
        for batch in _batches(dataset, int(settings["batch_size"]), settings["show_progress"], "evaluate"):
            hide = random_block_mask(batch["date_mask"], model.encoder.num_groups, model.mask_ratio, generator)
            out = model(batch["cube"], batch["day_of_year"], batch["date_mask"], batch["valid"], hide=hide)
            x = batch["cube"].double()
            group = model.encoder.embed.padded_channels // model.encoder.num_groups
            hidden = hide.repeat_interleave(group, dim=2)[:, :, :c] & batch["date_mask"][..., None]  # (B, T, C)
            scored = hidden[..., None, None] & batch["valid"][:, :, None]  # (B, T, C, H, W)
            seen = (~hidden)[..., None, None] & batch["valid"][:, :, None]
            baseline = (x * seen).sum(1, keepdim=True) / seen.sum(1, keepdim=True).clamp(min=1)  # (B, 1, C, H, W)
            for name, pred in (("model", out["pred"].double()), ("temporal_mean", baseline.expand_as(x))):
                sums[name] += (((pred - x) ** 2) * scored).sum((0, 1, 3, 4))
            counts += scored.sum((0, 1, 3, 4)).double()
    per_band = {name: [float(v) if n > 0 else None for v, n in zip(s / counts.clamp(min=1), counts)]
                for name, s in sums.items()}
    total = float(counts.sum())
    summary = {name: float(s.sum()) / total if total else None for name, s in sums.items()}
    report = {"split": split, "checkpoint": str(path), "run_name": manifest.get("run_name"), "family": family.name,
              "data_version": dataset_version(sample_index), "mask_ratio": model.mask_ratio,
              "masked_mse": summary, "per_band_mse": per_band, "scored_values": int(total),
              "band_names": meta.get("band_names"), "units": "normalised (train statistics over valid observations)"}
    figures = {
        "error_per_band": plot_error_per_band(per_band["model"], meta.get("wavelengths_nm"),
                                              baselines={"per-pixel temporal mean": per_band["temporal_mean"]},
                                              value_label="MSE on hidden valid values (normalised units$^2$)"),
        "loss_curves": plot_loss_curves(history or checkpoint.get("history") or [], loss_label="masked MSE"),
    }
    values = {f"masked_mse/{name}": value for name, value in summary.items() if value is not None}
    return report, values, figures
