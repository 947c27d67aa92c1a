"""``unet_mim``: masked image modelling on a U-Net (SimMIM-style), self-supervised on the store's cubes.

Evaluated exactly as the spectral MAE (:func:`spectral_training.families.mae.evaluation.evaluate_mae`):
the same metrics in physical units on the masked values, the same two baselines with the same
masks, the same plots, so the two pretraining families compare in one table.
"""

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
from spectral_training.families.mae.model import band_stats_matching
from spectral_training.families.mae.params import EvaluationParams
from spectral_training.families.params import FamilyParamsError
from spectral_training.families.unet.common import UNET_KEYS, unet_kwargs
from spectral_training.models.unet import SimMIMUNet

MIM_KEYS = ("patch_size", "mask_ratio")


def build_mim_model(model_kwargs: Mapping[str, Any]) -> SimMIMUNet:
    """The model ``UNetMIMFamily.prepare`` (or a checkpoint's ``metadata.model_kwargs``) describes."""
    kwargs = dict(model_kwargs)
    return SimMIMUNet(kwargs.pop("encoder"), kwargs.pop("num_bands"), kwargs.pop("image_size"), **kwargs)


class UNetMIMFamily(Family):
    """Reconstruct randomly masked patches (every band of a patch hidden); best.pt on the val loss."""

    name = "unet_mim"
    plot_names = ("reconstruction_grid", "error_per_band", "spectra", "loss_curves")
    model_keys = (*UNET_KEYS, *MIM_KEYS)
    evaluation_keys = tuple(EvaluationParams.__dataclass_fields__)

    def prepare(self, store: CubeStore, sample_index: pd.DataFrame, band_stats: dict, params: dict) -> FamilySetup:
        band_stats_matching(band_stats, store)
        info = store.info
        model = params["model"]
        kwargs = unet_kwargs(model, info["tile_size"], f"{self.name}.model")
        patch, ratio = int(model.get("patch_size", 4)), float(model.get("mask_ratio", 0.6))
        if kwargs["image_size"] % patch:
            divisors = [d for d in range(1, kwargs["image_size"] + 1) if kwargs["image_size"] % d == 0]
            raise FamilyParamsError(f"{self.name}.model.patch_size {patch} does not divide the image size "
                                    f"{kwargs['image_size']} px; choose one of {divisors}")
        if not 0.0 < ratio < 1.0:
            raise FamilyParamsError(f"{self.name}.model.mask_ratio must be in (0, 1), got {ratio}")
        model_kwargs = {**kwargs, "num_bands": int(info["num_bands"]), "patch_size": patch, "mask_ratio": ratio}
        transforms = params["transforms"]
        train_t = build_transforms(transforms.get("train"), band_stats, where=f"{self.name}.transforms.train")
        eval_t = build_transforms(transforms.get("eval"), band_stats, where=f"{self.name}.transforms.eval")
        return FamilySetup(
            model_kwargs=model_kwargs,
            train_transform=train_t,
            eval_transform=eval_t,
            train_set=NormalisedTileDataset(store, sample_index, "train", train_t),
            val_set=NormalisedTileDataset(store, sample_index, "val", eval_t),
            metadata=run_metadata(self.name, store, band_stats, transforms, model_kwargs),
            image_size=model_kwargs["image_size"],
            num_bands=model_kwargs["num_bands"],
            run_label=str(kwargs["encoder"]).replace("/", "_"),
        )

    def build_model(self, model_kwargs: Mapping[str, Any]) -> nn.Module:
        return build_mim_model(model_kwargs)

    def evaluate(self, store, sample_index, band_stats, manifest, params, history):
        metrics, figures = evaluate_mae(store, sample_index, band_stats, manifest,
                                        EvaluationParams.from_dict(params["evaluation"]), history=history,
                                        build_model=build_mim_model)
        metrics["family"] = self.name
        values = {f"{name}/{key}": value for name, row in metrics["summary"].items() for key, value in row.items()
                  if value is not None}
        return metrics, values, figures
