"""Evaluate a trained classifier on a split: metrics, confusion matrix, where it looks, curves."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
from matplotlib.figure import Figure
from tqdm.auto import tqdm

from spectral_training.cubes.data_version import dataset_version
from spectral_training.cubes.dataset import NormalisedTileDataset
from spectral_training.cubes.store import CubeStore
from spectral_training.cubes.transforms import build_transforms
from spectral_training.families.base import checkpoint_path, empty_split_fallback
from spectral_training.families.classifier.labels import LabelSpace, labelled_index
from spectral_training.metrics.classification import ClassificationMetrics, scalar_summary
from spectral_training.models.explain import explain
from spectral_training.plots.classification import plot_attention_maps, plot_confusion_matrix
from spectral_training.plots.curves import plot_loss_curves, plot_metric_curves
from spectral_training.plots.reconstruction import rgb_band_indices
from spectral_training.training.checkpoint import load_checkpoint

if TYPE_CHECKING:
    from spectral_training.families.classifier.family import ClassifierFamily

log = logging.getLogger(__name__)

EVALUATION_DEFAULTS = {"split": "test", "batch_size": 32, "checkpoint": "best", "use_ema": False,
                       "explain_samples": 4, "rgb_fallback": [0, 1, 2], "show_progress": True}


def rgb_composite(x: torch.Tensor, bands: tuple[int, int, int]) -> torch.Tensor:
    """(N, C, H, W) model input -> (N, 3, H, W) in [0, 1], each channel stretched 2-98 %."""
    rgb = x[:, list(bands)].float()
    flat = rgb.flatten(2)
    lo = flat.quantile(0.02, dim=-1)[..., None, None]
    hi = flat.quantile(0.98, dim=-1)[..., None, None]
    return ((rgb - lo) / (hi - lo).clamp_min(1e-6)).clamp(0, 1)


def evaluate_classifier(family: ClassifierFamily, store: CubeStore, sample_index: pd.DataFrame, manifest: dict,
                        params: Mapping[str, Any], history: list[dict]) -> tuple[dict, dict[str, float], dict[str, Figure]]:
    """Score the manifest's checkpoint on ``evaluation.split`` (test by default).

    The label space, band statistics and transforms are the checkpoint's, so the evaluation sees
    the data exactly as training did.
    """
    settings = {**EVALUATION_DEFAULTS, **(params.get("evaluation") or {})}
    path = Path(checkpoint_path(manifest, settings["checkpoint"]))
    model = family.rebuild_for_checkpoint(manifest["model_kwargs"])
    checkpoint = load_checkpoint(path, model, use_ema=bool(settings["use_ema"]))
    model.eval()
    meta = checkpoint["metadata"]
    space = LabelSpace.from_dict(meta["label_space"])
    eval_t = build_transforms(meta["transforms"]["eval"], meta["band_stats"], where=f"{family.name}.transforms.eval")
    index = labelled_index(sample_index, space)
    split = empty_split_fallback(index, settings["split"], log)
    dataset = NormalisedTileDataset(store, index, split, eval_t)
    if len(dataset) == 0:
        raise ValueError(f"no labelled samples to evaluate in the {split} split of {store.path}")

    scores = ClassificationMetrics(space.num_classes, list(space.names))
    batch_size = int(settings["batch_size"])
    shown: dict[str, Any] = {}
    with torch.no_grad():
        for start in tqdm(range(0, len(dataset), batch_size), desc="evaluate", unit="batch",
                          disable=not settings["show_progress"]):
            items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
            x = torch.stack([item["cube"] for item in items])
            labels = torch.tensor([item["label"] for item in items])
            logits = model(x)
            scores.update(logits.float(), labels)
            if not shown:
                shown = {"x": x[: settings["explain_samples"]], "labels": labels, "logits": logits}
    result = scores.compute()
    maps, method = explain(model, shown["x"])
    bands = rgb_band_indices(meta.get("wavelengths_nm"), fallback=tuple(settings["rgb_fallback"]),
                             num_bands=shown["x"].shape[1])
    predicted = shown["logits"].argmax(dim=-1)
    titles = [f"true {space.names[int(t)]} / predicted {space.names[int(p)]}"
              for t, p in zip(shown["labels"], predicted)][: len(maps)]
    figures = {
        "confusion_matrix": plot_confusion_matrix(result["confusion_matrix"], list(space.names)),
        "attention_maps": plot_attention_maps(rgb_composite(shown["x"], bands), maps, titles, method),
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
        "model": manifest["model_kwargs"].get("name"),
        "data_version": dataset_version(sample_index),
        "class_names": list(space.names),
        "label_space": space.to_dict(),
        "explain_method": method,
        "band_names": meta.get("band_names"),
    }
    return report, scalar_summary(result), figures
