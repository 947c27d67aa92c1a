"""``unet_temporal``: a U-Net that predicts one held-out date of a series from the other dates.

Self-supervised on a series store (``--params dataset=sits_demo``): each step holds out one
eligible date per series (drawn anew every step while training; a fixed, seeded date per series
in validation and evaluation, see :mod:`.temporal_data`), gives the model the other dates and the
held-out date's day of year (:class:`spectral_training.models.unet_temporal.TemporalUNet`, whose
docstring says why its input is the date's temporal neighbourhood and not all dates stacked),
and scores the MSE on the valid pixels of the held-out date only (per-band normalised). best.pt
follows ``val_loss``. Evaluation compares it, on the same held-out dates, with persistence and
linear interpolation (:mod:`.temporal_evaluation`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn

from spectral_training.cubes.store import CubeStore
from spectral_training.cubes.transforms import build_transforms
from spectral_training.families.base import Family, FamilySetup, run_metadata
from spectral_training.families.params import FamilyParamsError
from spectral_training.families.sits.model import require_series_store  # the series families' shared check
from spectral_training.families.unet.common import UNET_KEYS, unet_kwargs
from spectral_training.families.unet.temporal_data import TemporalSamples
from spectral_training.models.unet import masked_mse
from spectral_training.models.unet_temporal import TemporalUNet

TEMPORAL_KEYS = ("context_dates", "residual", "time_scale_days", "min_target_valid", "interior_only")
EVALUATION_KEYS = ("split", "batch_size", "checkpoint", "use_ema", "seed", "plot_samples", "rgb_fallback",
                   "show_progress")
VALIDATION_SEED = 0  # the held-out dates of the val split (fixed, so val_loss compares across runs)


def held_out_frame(series: Tensor, valid: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """The held-out date's values (B, C, H, W) and valid mask (B, H, W) of each series."""
    rows = torch.arange(series.shape[0], device=series.device)
    target = target.long().to(series.device)
    return series[rows, target], valid[rows, target].bool()


def choose_targets(eligible: Tensor) -> Tensor:
    """One eligible date per series, uniformly, from the global CPU RNG (which every checkpoint
    holds, so a resumed run draws the same dates); (B,) long on ``eligible``'s device."""
    weights = eligible.detach().float().cpu()
    weights[weights.sum(dim=1) == 0, 0] = 1.0  # a series without an observed pixel: scores nothing anyway
    return torch.multinomial(weights, 1).squeeze(1).to(eligible.device)


def temporal_forward(model: nn.Module, batch: Mapping[str, Any], target: Tensor) -> dict:
    """The model on a batch with ``target`` held out: loss on its valid pixels only, and the same
    loss for the linear interpolation the model starts from (``loss_parts``, for the history)."""
    out = model(batch["cube"], batch["day_of_year"], batch["date_mask"], batch["valid"], target)
    truth, seen = held_out_frame(batch["cube"], batch["valid"], target)
    loss = masked_mse(out["pred"], truth, seen[:, None])
    with torch.no_grad():
        fill_loss = masked_mse(out["fill"], truth, seen[:, None])
    return {"loss": loss, "loss_parts": {"linear_interpolation_mse": fill_loss}, "pred": out["pred"],
            "target": target}


class TemporalObjective:
    """forward_fn: a random eligible date held out per series while training, the dataset's
    ``target_date`` in eval mode (validation, the pre-flight's val batch)."""

    def __call__(self, model: nn.Module, batch: Mapping[str, Any]) -> dict:
        target = choose_targets(batch["eligible"]) if model.training else batch["target_date"]
        return temporal_forward(model, batch, target)


def build_temporal_model(model_kwargs: Mapping[str, Any]) -> TemporalUNet:
    """The model ``UNetTemporalFamily.prepare`` (or a checkpoint's ``metadata.model_kwargs``) describes."""
    kwargs = {k: v for k, v in model_kwargs.items() if k not in ("min_target_valid", "interior_only")}
    return TemporalUNet(kwargs.pop("encoder"), kwargs.pop("num_bands"), kwargs.pop("image_size"), **kwargs)


def _temporal_settings(model: Mapping[str, Any], where: str) -> dict:
    k = model.get("context_dates", 2)
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise FamilyParamsError(f"{where}.context_dates must be an integer >= 1 (dates on each side), got {k!r}")
    scale = float(model.get("time_scale_days", 30.0))
    if scale <= 0:
        raise FamilyParamsError(f"{where}.time_scale_days must be > 0, got {scale}")
    share = float(model.get("min_target_valid", 0.5))
    if not 0.0 <= share <= 1.0:
        raise FamilyParamsError(f"{where}.min_target_valid is a share of pixels in [0, 1], got {share}")
    residual, interior = model.get("residual", True), model.get("interior_only", True)
    for key, value in (("residual", residual), ("interior_only", interior)):
        if not isinstance(value, bool):
            raise FamilyParamsError(f"{where}.{key} must be true or false, got {value!r}")
    return {"context_dates": k, "residual": residual, "time_scale_days": scale, "min_target_valid": share,
            "interior_only": interior}


class UNetTemporalFamily(Family):
    """Predict a held-out date of a series from the others; best.pt on val_loss (min)."""

    name = "unet_temporal"
    plot_names = ("temporal_prediction", "error_per_band", "loss_curves")
    model_keys = (*UNET_KEYS, *TEMPORAL_KEYS)
    evaluation_keys = EVALUATION_KEYS

    def prepare(self, store: CubeStore, sample_index: pd.DataFrame, band_stats: dict, params: dict) -> FamilySetup:
        info = require_series_store(store, self.name)
        model = params["model"]
        kwargs = unet_kwargs(model, info["tile_size"], f"{self.name}.model")
        if kwargs["image_size"] != info["tile_size"]:
            raise FamilyParamsError(f"{self.name}.model.image_size {kwargs['image_size']} differs from the store's "
                                    f"{info['tile_size']} px tiles: series take no resize; set it to null")
        model_kwargs = {**kwargs, **_temporal_settings(model, f"{self.name}.model"),
                        "num_bands": int(info["num_bands"])}
        for split in ("train", "eval"):
            if (params.get("transforms") or {}).get(split):
                raise FamilyParamsError(f"{self.name}.transforms.{split}: series take no transforms (the series "
                                        f"dataset normalises them); set it to []")
        # An identity pipeline holding the normalisation statistics, for the pre-flight's shape and
        # zero-std checks (the series dataset applies the same statistics).
        identity = build_transforms([], band_stats, where=f"{self.name}.transforms")
        rule = {"min_valid": model_kwargs["min_target_valid"], "interior_only": model_kwargs["interior_only"]}
        rows = {s: sample_index[sample_index["split"] == s] for s in ("train", "val")}
        return FamilySetup(
            model_kwargs=model_kwargs, train_transform=identity, eval_transform=identity,
            train_set=TemporalSamples(store, rows["train"], band_stats, **rule),
            val_set=TemporalSamples(store, rows["val"], band_stats, **rule, seed=VALIDATION_SEED),
            metadata=run_metadata(self.name, store, band_stats, {"train": [], "eval": []}, model_kwargs),
            image_size=kwargs["image_size"], num_bands=model_kwargs["num_bands"],
            run_label=f"{kwargs['encoder']}-k{model_kwargs['context_dates']}".replace("/", "_"),
        )

    def build_model(self, model_kwargs: Mapping[str, Any]) -> nn.Module:
        return build_temporal_model(model_kwargs)

    def make_forward(self, setup: FamilySetup):
        return TemporalObjective()

    def evaluate(self, store, sample_index, band_stats, manifest, params, history):
        from spectral_training.families.unet.temporal_evaluation import evaluate_temporal

        return evaluate_temporal(self, store, sample_index, band_stats, manifest, params, history)
