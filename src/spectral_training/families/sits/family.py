"""The SITS families: ``sits_pretrain`` (joint spectral x temporal masked pretraining on every
series, labelled or not) and ``sits_former`` (classification, from scratch or from a
pretraining checkpoint's encoder)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from spectral_training.cubes.store import CubeStore
from spectral_training.cubes.transforms import build_transforms
from spectral_training.families.base import Family, FamilySetup, run_metadata
from spectral_training.families.classifier.labels import label_space, labelled_index, train_class_weights
from spectral_training.families.classifier.metrics import ValidationMetrics
from spectral_training.families.params import FamilyParamsError, check_keys
from spectral_training.families.sits.data import SitsSamples, split_rows
from spectral_training.families.sits.model import (
    CLASSIFIER_MODEL_KEYS,
    PRETRAIN_MODEL_KEYS,
    build_classifier,
    build_pretrain,
    encoder_kwargs,
    pretrained_encoder_kwargs,
    require_series_store,
    resolve_pretrained,
)

log = logging.getLogger(__name__)

LABEL_KEYS = ("positive_class", "class_weights")
LOSS_KEYS = ("label_smoothing",)
EVALUATION_KEYS = ("split", "batch_size", "checkpoint", "use_ema", "curve_bins", "show_progress")


def series_forward(model: nn.Module, batch: Mapping[str, Any]):
    """The model's call on a series batch (the engine's sample tensor is ``cube``)."""
    return model(batch["cube"], batch["day_of_year"], batch["date_mask"])


class SitsObjective:
    """Weighted cross-entropy with label smoothing while training: ``{"loss", "logits"}``."""

    def __init__(self, class_weights: Sequence[float] | None, label_smoothing: float) -> None:
        self.weights = torch.tensor(class_weights, dtype=torch.float32) if class_weights is not None else None
        self.label_smoothing = float(label_smoothing)

    def __call__(self, model: nn.Module, batch: Mapping[str, Any]) -> dict:
        logits = series_forward(model, batch)
        weight = self.weights.to(logits.device) if self.weights is not None else None
        smoothing = self.label_smoothing if model.training else 0.0  # validation scores the fit itself
        loss = F.cross_entropy(logits.float(), batch["label"].long(), weight=weight, label_smoothing=smoothing)
        return {"loss": loss, "logits": logits}


def pretrain_forward(model: nn.Module, batch: Mapping[str, Any]) -> dict:
    """Masked reconstruction of hidden (date, band group) blocks: ``{"loss", "pred", "hide"}``."""
    return model(batch["cube"], batch["day_of_year"], batch["date_mask"], batch["valid"])


def _no_transforms(params: Mapping[str, Any], family: str, band_stats: dict):
    """Series are normalised by their dataset; the spatial transforms of cubes do not apply yet."""
    for split in ("train", "eval"):
        if (params.get("transforms") or {}).get(split):
            raise FamilyParamsError(f"{family}.transforms.{split}: series take no transforms (the series dataset "
                                    f"normalises them); set it to []")
    # An identity pipeline with the normalisation statistics, for the pre-flight's shape and
    # zero-std checks (the dataset applies the same statistics).
    return build_transforms([], band_stats, where=f"{family}.transforms"), {"train": [], "eval": []}


class SitsFormerFamily(Family):
    """SITS-Former classification of a series tile; best.pt on the monitored metric (val_accuracy)."""

    name = "sits_former"
    extra_blocks = ("labels", "loss")
    plot_names = ("confusion_matrix", "class_curves", "date_attention", "loss_curves", "metric_curves")
    model_keys = CLASSIFIER_MODEL_KEYS
    evaluation_keys = EVALUATION_KEYS

    def prepare(self, store: CubeStore, sample_index: pd.DataFrame, band_stats: dict, params: dict) -> FamilySetup:
        info = require_series_store(store, self.name)
        labels = params.get("labels") or {}
        check_keys(labels, LABEL_KEYS, f"{self.name}.labels")
        check_keys(params.get("loss") or {}, LOSS_KEYS, f"{self.name}.loss")
        space = label_space(sample_index, list(info.get("class_names") or []), labels.get("positive_class"),
                            where=f"{self.name}.labels")
        index = labelled_index(sample_index, space)
        model = params["model"]
        pretrained = model.get("pretrained")
        if pretrained:
            path = resolve_pretrained(pretrained)
            kwargs = pretrained_encoder_kwargs(path, list(info["band_names"]))
            if model.get("dropout") is not None:
                kwargs["dropout"] = float(model["dropout"])
            label = f"pretrained-{path.parent.name}"
        else:
            path, kwargs, label = None, encoder_kwargs(model, info, self.name, str(store.path)), model.get("preset", "demo")
        model_kwargs = {**kwargs, "num_classes": space.num_classes, "pretrained": str(path) if path else None}
        transform, spec = _no_transforms(params, self.name, band_stats)
        weights = train_class_weights(index, space.num_classes) if labels.get("class_weights", True) else None
        if weights:
            log.info("%s class weights from the train split: %s", self.name,
                     ", ".join(f"{n}={w:.3g}" for n, w in zip(space.names, weights)))
        metadata = {**run_metadata(self.name, store, band_stats, spec, model_kwargs),
                    "class_names": list(space.names), "label_space": space.to_dict(),
                    "loss": dict(params.get("loss") or {}), "pretrained_checkpoint": model_kwargs["pretrained"]}
        return FamilySetup(
            model_kwargs=model_kwargs, train_transform=transform, eval_transform=transform,
            train_set=SitsSamples(store, split_rows(index, "train"), band_stats),
            val_set=SitsSamples(store, split_rows(index, "val"), band_stats),
            metadata=metadata, image_size=kwargs["img_size"], num_bands=kwargs["in_channels"], run_label=label,
            extra={"label_space": space, "class_weights": weights},
        )

    def build_model(self, model_kwargs: Mapping[str, Any]) -> nn.Module:
        return build_classifier(model_kwargs)

    def make_forward(self, setup: FamilySetup):
        return SitsObjective(setup.extra.get("class_weights"), setup.metadata["loss"].get("label_smoothing", 0.0))

    def validation_metrics(self, setup: FamilySetup):
        space = setup.extra["label_space"]
        return lambda: ValidationMetrics(space.num_classes, list(space.names))

    def evaluate(self, store, sample_index, band_stats, manifest, params, history):
        from spectral_training.families.sits.evaluation import evaluate_sits_classifier

        return evaluate_sits_classifier(self, store, sample_index, manifest, params, history)


class SitsPretrainFamily(Family):
    """Masked (date, band group) reconstruction on every series of the split; best.pt on val_loss."""

    name = "sits_pretrain"
    plot_names = ("error_per_band", "loss_curves")
    model_keys = PRETRAIN_MODEL_KEYS
    evaluation_keys = ("split", "batch_size", "checkpoint", "use_ema", "seed", "show_progress")

    def prepare(self, store: CubeStore, sample_index: pd.DataFrame, band_stats: dict, params: dict) -> FamilySetup:
        info = require_series_store(store, self.name)
        model = params["model"]
        kwargs = encoder_kwargs(model, info, self.name, str(store.path))
        ratio = float(model.get("mask_ratio", 0.4))
        if not 0.0 < ratio < 1.0:
            raise FamilyParamsError(f"{self.name}.model.mask_ratio must be between 0 and 1 (exclusive), got {ratio}")
        model_kwargs = {**kwargs, "mask_ratio": ratio}
        transform, spec = _no_transforms(params, self.name, band_stats)
        rows = sample_index.copy()  # every series, labelled or not: pretraining needs no labels
        return FamilySetup(
            model_kwargs=model_kwargs, train_transform=transform, eval_transform=transform,
            train_set=SitsSamples(store, split_rows(rows, "train"), band_stats),
            val_set=SitsSamples(store, split_rows(rows, "val"), band_stats),
            metadata=run_metadata(self.name, store, band_stats, spec, model_kwargs),
            image_size=kwargs["img_size"], num_bands=kwargs["in_channels"],
            run_label=str(model.get("preset", "demo")),
        )

    def build_model(self, model_kwargs: Mapping[str, Any]) -> nn.Module:
        return build_pretrain(model_kwargs)

    def forward(self, model: nn.Module, batch: Mapping[str, Any]) -> Mapping[str, Any]:
        return pretrain_forward(model, batch)

    def evaluate(self, store, sample_index, band_stats, manifest, params, history):
        from spectral_training.families.sits.evaluation import evaluate_sits_pretrain

        return evaluate_sits_pretrain(self, store, sample_index, manifest, params, history)
