"""Evaluate a trained segmentation U-Net on a split: per-class IoU, mean IoU, pixel accuracy, masks."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
from matplotlib.figure import Figure
from tqdm.auto import tqdm

from spectral_training.cubes.data_version import dataset_version
from spectral_training.cubes.store import CubeStore
from spectral_training.cubes.transforms import build_transforms
from spectral_training.families.base import checkpoint_path, empty_split_fallback
from spectral_training.families.classifier.labels import LabelSpace
from spectral_training.families.unet.seg_data import SegmentationTileDataset
from spectral_training.metrics.segmentation import SegmentationMetrics, segmentation_report
from spectral_training.plots.curves import plot_loss_curves, plot_metric_curves
from spectral_training.plots.reconstruction import rgb_band_indices
from spectral_training.plots.segmentation import plot_segmentation_masks
from spectral_training.training.checkpoint import load_checkpoint

if TYPE_CHECKING:
    from spectral_training.families.unet.seg import UNetSegFamily

log = logging.getLogger(__name__)

_METRIC_NAME = re.compile(r"[^\w\-. /]")  # characters MLflow refuses in a metric name

EVALUATION_DEFAULTS = {"split": "test", "batch_size": 16, "checkpoint": "best", "use_ema": False, "plot_samples": 4,
                       "rgb_fallback": [0, 1, 2], "show_progress": True}


def evaluate_segmentation(family: UNetSegFamily, store: CubeStore, sample_index: pd.DataFrame, manifest: dict,
                          params: Mapping[str, Any], history: list[dict]) -> tuple[dict, dict[str, float], dict[str, Figure]]:
    """Score the manifest's checkpoint on ``evaluation.split`` (test by default), on the labelled pixels.

    Label space, band statistics and transforms are the checkpoint's, so the evaluation sees the
    data exactly as training did.
    """
    settings = {**EVALUATION_DEFAULTS, **(params.get("evaluation") or {})}
    path = Path(checkpoint_path(manifest, settings["checkpoint"]))
    model = family.rebuild_for_checkpoint(manifest["model_kwargs"])
    checkpoint = load_checkpoint(path, model, use_ema=bool(settings["use_ema"]))
    model.eval()
    meta = checkpoint["metadata"]
    space = LabelSpace.from_dict(meta["label_space"])
    eval_t = build_transforms(meta["transforms"]["eval"], meta["band_stats"], where=f"{family.name}.transforms.eval")
    split = empty_split_fallback(sample_index, settings["split"], log)
    dataset = SegmentationTileDataset(store, sample_index, split, eval_t, space)
    if len(dataset) == 0:
        raise ValueError(f"no tile with a labelled pixel to evaluate in the {split} split of {store.path}")

    scores = SegmentationMetrics(space.num_classes)
    batch_size = int(settings["batch_size"])
    shown: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for start in tqdm(range(0, len(dataset), batch_size), desc="evaluate", unit="batch",
                          disable=not settings["show_progress"]):
            items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
            x = torch.stack([item["cube"] for item in items])
            target = torch.stack([item["label_map"] for item in items])
            predicted = model(x).argmax(dim=1)
            scores.update(predicted, target)
            if not shown:
                k = int(settings["plot_samples"])
                shown = {"x": eval_t.normalise.inverse(x[:k]), "target": target[:k], "predicted": predicted[:k]}
    report = segmentation_report(scores.confusion, list(space.names))
    bands = rgb_band_indices(meta.get("wavelengths_nm"), fallback=tuple(settings["rgb_fallback"]),
                             num_bands=shown["x"].shape[1])
    curves = history or checkpoint.get("history") or []
    figures = {
        "segmentation_masks": plot_segmentation_masks(shown["x"], shown["target"], shown["predicted"], bands,
                                                      list(space.names)),
        "loss_curves": plot_loss_curves(curves, loss_label="cross-entropy (labelled pixels)"),
        "metric_curves": plot_metric_curves(curves, ["val_miou", "val_pixel_accuracy"],
                                            f"{family.name}: validation metrics"),
    }
    report.update({
        "split": split,
        "num_tiles": len(dataset),
        "checkpoint": str(path),
        "checkpoint_epoch": int(checkpoint["progress"]["epoch"]) if "progress" in checkpoint else None,
        "run_name": manifest.get("run_name"),
        "family": family.name,
        "init": "unet_mim" if manifest["model_kwargs"].get("checkpoint") else "scratch",
        "pretrained_from": manifest["model_kwargs"].get("checkpoint"),
        "encoder": manifest["model_kwargs"]["encoder"],
        "data_version": dataset_version(sample_index),
        "label_space": space.to_dict(),
        "band_names": meta.get("band_names"),
    })
    values = {"mean_iou": report["mean_iou"], "pixel_accuracy": report["pixel_accuracy"],
              **{f"iou/{_METRIC_NAME.sub('_', name)}": row["iou"] for name, row in report["per_class"].items()}}
    return report, {k: v for k, v in values.items() if v is not None}, figures
