"""The spectral MAE family: self-supervised pretraining on the cubes of the store."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd
from torch import nn

from spectral_training.cubes.dataset import NormalisedTileDataset
from spectral_training.cubes.store import CubeStore
from spectral_training.cubes.transforms import build_transforms
from spectral_training.families.base import Family, FamilySetup, run_metadata
from spectral_training.families.mae.evaluation import evaluate_mae
from spectral_training.families.mae.model import (
    BUILD_ARGS,
    NOT_BUILD_ARGS,
    band_stats_matching,
    build_mae_model,
    mae_build_kwargs,
)
from spectral_training.families.mae.params import EvaluationParams


class MAEFamily(Family):
    """Spectral MAE-ViT pretraining: reconstruct masked 3-D patches; best.pt on the val loss."""

    name = "mae"
    plot_names = ("reconstruction_grid", "error_per_band", "spectra", "loss_curves")
    model_keys = (*NOT_BUILD_ARGS, *BUILD_ARGS)
    evaluation_keys = tuple(EvaluationParams.__dataclass_fields__)

    def prepare(self, store: CubeStore, sample_index: pd.DataFrame, band_stats: dict, params: dict) -> FamilySetup:
        band_stats_matching(band_stats, store)
        info = store.info
        model_kwargs = mae_build_kwargs(params["model"], info)
        transforms = params["transforms"]
        train_t = build_transforms(transforms.get("train"), band_stats, where="mae.transforms.train")
        eval_t = build_transforms(transforms.get("eval"), band_stats, where="mae.transforms.eval")
        image_size = model_kwargs["image_size"]
        metadata = run_metadata(self.name, store, band_stats, transforms, model_kwargs)
        return FamilySetup(
            model_kwargs=model_kwargs,
            train_transform=train_t,
            eval_transform=eval_t,
            train_set=NormalisedTileDataset(store, sample_index, "train", train_t),
            val_set=NormalisedTileDataset(store, sample_index, "val", eval_t),
            metadata=metadata,
            image_size=image_size if isinstance(image_size, int) else int(image_size[0]),
            num_bands=model_kwargs["num_bands"],
            run_label=model_kwargs["variant"],
        )

    def build_model(self, model_kwargs: Mapping[str, Any]) -> nn.Module:
        return build_mae_model(model_kwargs)

    def evaluate(self, store, sample_index, band_stats, manifest, params, history):
        metrics, figures = evaluate_mae(store, sample_index, band_stats, manifest,
                                        EvaluationParams.from_dict(params["evaluation"]), history=history)
        values = {
            f"{name}/{key}": value
            for name, row in metrics["summary"].items()
            for key, value in row.items()
            if value is not None
        }
        return metrics, values, figures

