"""Supervised classifier families: timm / torchvision models on the labelled tiles of the store.

``cnn``, ``vit``, ``swin``, ``eva02``, ``tv_vit``, ``satellite_cnn`` and ``flood_cnn`` are this
one family class with another parameter file: the preset is the recipe (optimizer, schedule,
regularisation), the model name and image size are parameters.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from torch import nn

from spectral_training.cubes.dataset import NormalisedTileDataset
from spectral_training.cubes.store import CubeStore
from spectral_training.cubes.transforms import Compose, build_transforms
from spectral_training.families.base import Family, FamilySetup, run_metadata
from spectral_training.families.classifier.evaluation import evaluate_classifier
from spectral_training.families.classifier.labels import (
    LabelSpace,
    label_space,
    labelled_index,
    train_class_weights,
)
from spectral_training.families.classifier.metrics import ValidationMetrics
from spectral_training.families.classifier.objective import MIXUP_KEYS, ClassifierObjective
from spectral_training.families.params import FamilyParamsError, check_keys
from spectral_training.models.classifiers import build_classifier, model_input_size_by_name

log = logging.getLogger(__name__)

MODEL_KEYS = ("name", "image_size", "drop_rate", "drop_path_rate", "weights", "weights_adaptation", "kwargs")
LABEL_KEYS = ("positive_class", "class_weights")
LOSS_KEYS = ("label_smoothing",)
EVALUATION_KEYS = ("split", "batch_size", "checkpoint", "use_ema", "explain_samples", "rgb_fallback", "show_progress")
MODEL_SIZE = "model"  # a resize/crop to this value means "the size the model takes"


@dataclass
class ModelSetup:
    """What differs between classifier families when preparing a run: the model and its input."""

    model_kwargs: dict
    image_size: int
    band_stats: dict  # the statistics the input is normalised with
    run_label: str
    metadata: dict = field(default_factory=dict)  # added to the checkpoint metadata


def resolve_size_placeholders(spec: Sequence[Mapping[str, Any]] | None, image_size: int) -> list[dict]:
    """``[{resize: model}]`` -> ``[{resize: 224}]``: transforms written once for any model size."""
    return [{name: (image_size if value == MODEL_SIZE else value) for name, value in dict(step).items()}
            for step in (spec or [])]


def classifier_transforms(params: Mapping[str, Any], band_stats: dict, image_size: int,
                          family: str) -> tuple[Compose, Compose, dict]:
    """Train and eval transforms (normalisation first) and the resolved lists stored in checkpoints."""
    spec = {split: resolve_size_placeholders(params["transforms"].get(split), image_size) for split in ("train", "eval")}
    return (build_transforms(spec["train"], band_stats, where=f"{family}.transforms.train"),
            build_transforms(spec["eval"], band_stats, where=f"{family}.transforms.eval"), spec)


class ClassifierFamily(Family):
    """A timm or torchvision classifier trained on labelled tiles; best.pt on the monitored metric."""

    extra_blocks = ("labels", "loss", "mixup")
    plot_names = ("confusion_matrix", "attention_maps", "loss_curves", "metric_curves")
    model_keys = MODEL_KEYS
    evaluation_keys = EVALUATION_KEYS

    def __init__(self, name: str) -> None:
        self.name = name

    # ------------------------------------------------------------------ data and labels
    def label_space(self, store: CubeStore, sample_index: pd.DataFrame, params: Mapping[str, Any]) -> LabelSpace:
        labels = params.get("labels") or {}
        check_keys(labels, LABEL_KEYS, f"{self.name}.labels")
        return label_space(sample_index, list(store.info.get("class_names") or []), labels.get("positive_class"),
                           where=f"{self.name}.labels")

    def image_size(self, params: Mapping[str, Any], tile_size: int) -> int:
        """``model.image_size``, else the model's own data config (fixed-size transformers), else the tile size."""
        model = params["model"]
        if model.get("image_size") is not None:
            return int(model["image_size"])
        return model_input_size_by_name(model["name"], model_kwargs=model.get("kwargs")) or int(tile_size)

    def prepare(self, store: CubeStore, sample_index: pd.DataFrame, band_stats: dict, params: dict) -> FamilySetup:
        info = store.info
        space = self.label_space(store, sample_index, params)
        index = labelled_index(sample_index, space)
        built = self.model_setup(store, band_stats, space, params)
        train_t, eval_t, spec = classifier_transforms(params, built.band_stats, built.image_size, self.name)
        metadata = {**self.metadata(store, built.band_stats, space, spec, built.model_kwargs),
                    **check_objective_params(self.name, params), **built.metadata}
        return FamilySetup(
            model_kwargs=built.model_kwargs,
            train_transform=train_t,
            eval_transform=eval_t,
            train_set=NormalisedTileDataset(store, index, "train", train_t),
            val_set=NormalisedTileDataset(store, index, "val", eval_t),
            metadata=metadata,
            image_size=built.image_size,
            num_bands=int(info["num_bands"]),
            run_label=built.run_label,
            extra={"label_space": space, "class_weights": self.class_weights(params, index, space)},
        )

    def model_setup(self, store: CubeStore, band_stats: dict, space: LabelSpace, params: Mapping[str, Any]) -> ModelSetup:
        """The model's build arguments, input size and the statistics the input is normalised with."""
        info = store.info
        image_size = self.image_size(params, info["tile_size"])
        model_kwargs = self.model_kwargs(params, num_bands=int(info["num_bands"]), num_classes=space.num_classes,
                                         image_size=image_size, wavelengths=info.get("wavelengths_nm"))
        return ModelSetup(model_kwargs, image_size, band_stats,
                          run_label=str(params["model"].get("name", self.name)).replace("/", "_"))

    def metadata(self, store: CubeStore, band_stats: dict, space: LabelSpace, spec: dict, model_kwargs: dict) -> dict:
        return {**run_metadata(self.name, store, band_stats, spec, model_kwargs),
                "class_names": list(space.names), "label_space": space.to_dict()}

    def class_weights(self, params: Mapping[str, Any], index: pd.DataFrame, space: LabelSpace) -> list[float] | None:
        if not (params.get("labels") or {}).get("class_weights", True):
            return None
        weights = train_class_weights(index, space.num_classes)
        log.info("%s class weights from the train split: %s", self.name,
                 ", ".join(f"{n}={w:.3g}" for n, w in zip(space.names, weights)))
        return weights

    # ------------------------------------------------------------------ model
    def model_kwargs(self, params: Mapping[str, Any], *, num_bands: int, num_classes: int, image_size: int,
                     wavelengths: list[float] | None) -> dict:
        model = params["model"]
        if not model.get("name"):
            raise FamilyParamsError(f"{self.name}.model.name is missing: a timm model name such as resnet50")
        return {
            "name": model["name"],
            "num_classes": num_classes,
            "in_chans": num_bands,
            "image_size": image_size,
            "drop_rate": float(model.get("drop_rate") or 0.0),
            "drop_path_rate": float(model.get("drop_path_rate") or 0.0),
            "weights": model.get("weights"),
            "weights_adaptation": model.get("weights_adaptation") or "auto",
            "band_wavelengths_nm": [float(w) for w in wavelengths] if wavelengths else None,
            "model_kwargs": dict(model.get("kwargs") or {}),
        }

    def build_model(self, model_kwargs: Mapping[str, Any]) -> nn.Module:
        return build_classifier(**model_kwargs)

    def rebuild_for_checkpoint(self, model_kwargs: Mapping[str, Any]) -> nn.Module:
        """The architecture alone: the checkpoint holds the weights, the weights file is not read again."""
        return self.build_model({**model_kwargs, "weights": None})

    # ------------------------------------------------------------------ training
    def make_forward(self, setup: FamilySetup):
        return ClassifierObjective(setup.extra["label_space"].num_classes,
                                   class_weights=setup.extra.get("class_weights"),
                                   label_smoothing=setup.metadata["loss"].get("label_smoothing", 0.0),
                                   mixup=setup.metadata["mixup"])

    def validation_metrics(self, setup: FamilySetup):
        space: LabelSpace = setup.extra["label_space"]
        return lambda: ValidationMetrics(space.num_classes, list(space.names))

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, store, sample_index, band_stats, manifest, params, history):
        return evaluate_classifier(self, store, sample_index, manifest, params, history)


def check_objective_params(family: str, params: Mapping[str, Any]) -> dict:
    """The ``loss`` and ``mixup`` blocks, checked: what the objective is built from."""
    check_keys(params.get("loss") or {}, LOSS_KEYS, f"{family}.loss")
    mixup = params.get("mixup")
    if mixup:
        check_keys(mixup, MIXUP_KEYS, f"{family}.mixup")
    return {"loss": dict(params.get("loss") or {}), "mixup": dict(mixup) if mixup else None}
