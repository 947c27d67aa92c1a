"""``unet_seg``: per-pixel segmentation with a U-Net, from scratch or from a ``unet_mim`` encoder.

Labels are the store's per-pixel label maps (land cover; or water / flood against the rest with
``labels.positive_class``). With ``model.checkpoint`` (a unet_mim .pt, run folder or
``unet_mim_model.json``) the encoder starts from the pretraining's weights: its encoder name,
band list and normalisation statistics are the checkpoint's, and a dataset with other bands is an
error naming both lists. ``checkpoint: null`` trains the same U-Net from scratch: the baseline
that says what the pretraining is worth. best.pt follows the validation mean IoU.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from spectral_training.cubes.store import CubeStore
from spectral_training.cubes.transforms import build_transforms
from spectral_training.families.base import Family, FamilySetup, run_metadata
from spectral_training.families.classifier.labels import LabelSpace
from spectral_training.families.params import FamilyParamsError, check_keys
from spectral_training.families.unet.common import UNET_KEYS, resolve_unet_checkpoint, unet_kwargs
from spectral_training.families.unet.seg_data import (
    SegmentationTileDataset,
    check_joint_transforms,
    pixel_class_weights,
    pixel_label_space,
)
from spectral_training.metrics.segmentation import IGNORE_INDEX, SegmentationMetrics
from spectral_training.models.unet import UNet, load_encoder
from spectral_training.training.checkpoint import load_checkpoint

log = logging.getLogger(__name__)

LABEL_KEYS = ("positive_class", "class_weights")
EVALUATION_KEYS = ("split", "batch_size", "checkpoint", "use_ema", "plot_samples", "rgb_fallback", "show_progress")
MIM_ENCODER_PREFIX = "unet.encoder."  # where SimMIMUNet keeps the U-Net's encoder


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """Cross-entropy over the labelled pixels (target -1 ignored), class-weighted, in fp32.

    A batch without a labelled pixel gives 0 (still a function of the logits, so backward gives
    zero gradients rather than none).
    """
    per_pixel = F.cross_entropy(logits.float(), target.clamp(min=0), reduction="none")
    valid = (target != IGNORE_INDEX).float()
    w = valid if weight is None else valid * weight.to(logits.device)[target.clamp(min=0)]
    return (per_pixel * w).sum() / w.sum().clamp(min=1e-12)


class SegmentationObjective:
    """forward_fn: ``{"loss", "logits" (B, K, H, W)}`` from a batch's cube and label map."""

    def __init__(self, class_weights: list[float] | None) -> None:
        self.weight = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None

    def __call__(self, model: nn.Module, batch: Mapping[str, Any]) -> dict:
        logits = model(batch["cube"])
        return {"loss": segmentation_loss(logits, batch["label_map"], self.weight), "logits": logits}


class SegValidationMetrics:
    """The engine's per-epoch metrics: ``val_miou`` and ``val_pixel_accuracy`` in the history."""

    def __init__(self, num_classes: int) -> None:
        self.metrics = SegmentationMetrics(num_classes)

    def update(self, output: Mapping[str, Any], batch: Mapping[str, Any]) -> None:
        self.metrics.update(output["logits"].detach().float(), batch["label_map"])

    def compute(self) -> dict[str, float]:
        return self.metrics.compute()


def mim_encoder_info(reference: Any, dataset_bands: list[str], where: str) -> dict:
    """A unet_mim checkpoint's path, encoder settings, bands and statistics, checked against the dataset."""
    path = resolve_unet_checkpoint(reference, where=where)
    checkpoint = load_checkpoint(path)
    meta = checkpoint.get("metadata") or {}
    if meta.get("family") != "unet_mim":
        raise FamilyParamsError(f"{where}: {path} is a checkpoint of the family {meta.get('family')!r}, not unet_mim")
    if list(meta["band_names"]) != list(dataset_bands):
        raise FamilyParamsError(f"{where}: the checkpoint {path} was pretrained on the bands {meta['band_names']} but "
                                f"this dataset has {dataset_bands}; pretrain unet_mim on this dataset")
    kwargs = meta["model_kwargs"]
    return {"path": str(path), "encoder": kwargs["encoder"], "encoder_kwargs": kwargs.get("encoder_kwargs") or {},
            "band_stats": meta["band_stats"]}


class UNetSegFamily(Family):
    """A U-Net classifying every pixel; best.pt on the validation mean IoU."""

    name = "unet_seg"
    extra_blocks = ("labels",)
    plot_names = ("segmentation_masks", "loss_curves", "metric_curves")
    model_keys = (*UNET_KEYS, "checkpoint")
    evaluation_keys = EVALUATION_KEYS

    def prepare(self, store: CubeStore, sample_index: pd.DataFrame, band_stats: dict, params: dict) -> FamilySetup:
        info = store.info
        labels = params.get("labels") or {}
        check_keys(labels, LABEL_KEYS, f"{self.name}.labels")
        space = pixel_label_space(store, sample_index, labels.get("positive_class"), where=f"{self.name}.labels")
        model = params["model"]
        kwargs = unet_kwargs(model, info["tile_size"], f"{self.name}.model")
        stats, pretrained = band_stats, None
        if model.get("checkpoint"):
            pretrained = mim_encoder_info(model["checkpoint"], list(info["band_names"]), f"{self.name}.model.checkpoint")
            if (kwargs["encoder"], kwargs["encoder_kwargs"]) != (pretrained["encoder"], pretrained["encoder_kwargs"]):
                log.info("unet_seg: encoder %s from the checkpoint (model.encoder %s is not used)",
                         pretrained["encoder"], kwargs["encoder"])
            kwargs.update(encoder=pretrained["encoder"], encoder_kwargs=pretrained["encoder_kwargs"])
            stats = {**band_stats, **pretrained["band_stats"]}  # normalised as in pretraining
        model_kwargs = {**kwargs, "num_bands": int(info["num_bands"]), "num_classes": space.num_classes,
                        "checkpoint": pretrained["path"] if pretrained else None}
        transforms = params["transforms"]
        train_t = build_transforms(transforms.get("train"), stats, where=f"{self.name}.transforms.train")
        eval_t = build_transforms(transforms.get("eval"), stats, where=f"{self.name}.transforms.eval")
        check_joint_transforms(train_t, f"{self.name}.transforms.train")
        check_joint_transforms(eval_t, f"{self.name}.transforms.eval")
        train_set = SegmentationTileDataset(store, sample_index, "train", train_t, space)
        weights = pixel_class_weights(train_set.maps, space.num_classes) if labels.get("class_weights", True) else None
        metadata = {**run_metadata(self.name, store, stats, transforms, model_kwargs),
                    "class_names": list(space.names), "label_space": space.to_dict(), "class_weights": weights}
        init = "unet_mim" if pretrained else "scratch"
        return FamilySetup(
            model_kwargs=model_kwargs, train_transform=train_t, eval_transform=eval_t, train_set=train_set,
            val_set=SegmentationTileDataset(store, sample_index, "val", eval_t, space), metadata=metadata,
            image_size=kwargs["image_size"], num_bands=int(info["num_bands"]),
            run_label=f"{kwargs['encoder']}-{init}".replace("/", "_"),
            extra={"label_space": space, "class_weights": weights})

    def build_model(self, model_kwargs: Mapping[str, Any]) -> nn.Module:
        """The U-Net; with a checkpoint in ``model_kwargs`` its encoder holds the unet_mim weights."""
        unet = self.rebuild_for_checkpoint(model_kwargs)
        if model_kwargs.get("checkpoint"):
            state = load_checkpoint(model_kwargs["checkpoint"])["model"]
            encoder = {k[len("unet."):]: v for k, v in state.items() if k.startswith(MIM_ENCODER_PREFIX)}
            loaded = load_encoder(unet, encoder, source=str(model_kwargs["checkpoint"]))
            log.info("unet_seg: %d encoder tensors loaded from %s", len(loaded), model_kwargs["checkpoint"])
        return unet

    def rebuild_for_checkpoint(self, model_kwargs: Mapping[str, Any]) -> UNet:
        """The architecture alone (evaluation loads the trained weights on top)."""
        return UNet(model_kwargs["encoder"], model_kwargs["num_bands"], model_kwargs["num_classes"],
                    model_kwargs["decoder_channels"], model_kwargs.get("encoder_kwargs"))

    def make_forward(self, setup: FamilySetup):
        return SegmentationObjective(setup.extra.get("class_weights"))

    def validation_metrics(self, setup: FamilySetup):
        num_classes = setup.extra["label_space"].num_classes
        return lambda: SegValidationMetrics(num_classes)

    def evaluate(self, store, sample_index, band_stats, manifest, params, history):
        from spectral_training.families.unet.seg_evaluation import evaluate_segmentation

        return evaluate_segmentation(self, store, sample_index, manifest, params, history)

    @staticmethod
    def label_space_of(metadata: Mapping[str, Any]) -> LabelSpace:
        return LabelSpace.from_dict(metadata["label_space"])
