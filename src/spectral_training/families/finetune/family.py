"""Fine-tuning a classifier on a spectral MAE checkpoint's encoder (``full`` or ``linear_probe``).

Band list, wavelengths and normalisation come from the checkpoint, so the encoder sees data as it
did in pretraining; a dataset whose bands differ is an error naming both lists unless
``finetune.model.band_mapping`` says which dataset band feeds which checkpoint band.
``init: scratch`` builds the same encoder with random weights: the baseline that says what the
pretraining is worth.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from spectral_training.cubes.store import CubeStore
from spectral_training.families.classifier.family import ClassifierFamily, ModelSetup
from spectral_training.families.classifier.labels import LabelSpace
from spectral_training.families.mae.model import build_mae_model
from spectral_training.families.params import FamilyParamsError
from spectral_training.families.checkpoint_reference import resolve_checkpoint
from spectral_training.models.mae_classifier import MAEEncoderClassifier, mae_classifier_from_checkpoint

log = logging.getLogger(__name__)

MODEL_KEYS = ("checkpoint", "mode", "init", "global_pool", "image_size", "drop_rate", "drop_path_rate",
              "band_mapping", "use_ema")


def resolve_mae_checkpoint(reference: str | Path | None) -> Path:
    """A checkpoint file from a .pt path, a run folder (best.pt, else last.pt) or an MAE model manifest.

    Raises:
        FileNotFoundError: nothing there, with the command that makes one.
    """
    if not reference:
        raise FamilyParamsError("finetune.model.checkpoint is empty: give an MAE checkpoint (.pt), its run folder "
                                "or the model manifest data/06_models/<dataset>/mae_model.json")
    return resolve_checkpoint(reference, where="finetune.model.checkpoint", family="mae", pipeline="mae_pretrain")


class FinetuneFamily(ClassifierFamily):
    """A classifier whose backbone is our own MAE encoder."""

    model_keys = MODEL_KEYS

    def __init__(self) -> None:
        super().__init__("finetune")

    def model_setup(self, store: CubeStore, band_stats: dict, space: LabelSpace, params: Mapping[str, Any]) -> ModelSetup:
        """The MAE checkpoint's encoder: its bands, statistics (in dataset band order) and image size."""
        dataset_bands = list(store.info["band_names"])
        model = params["model"]
        checkpoint = resolve_mae_checkpoint(model.get("checkpoint"))
        _, info = mae_classifier_from_checkpoint(
            checkpoint, space.num_classes, image_size=model.get("image_size"), mode=model.get("mode", "full"),
            global_pool=model.get("global_pool", "avg"), dataset_band_names=dataset_bands,
            band_mapping=model.get("band_mapping"), use_ema=bool(model.get("use_ema", False)))
        image_size = info["image_size"] if isinstance(info["image_size"], int) else int(info["image_size"][0])
        model_kwargs = {
            "checkpoint": str(checkpoint),
            "num_classes": space.num_classes,
            "image_size": image_size,
            "mode": model.get("mode", "full"),
            "init": model.get("init", "pretrained"),
            "global_pool": model.get("global_pool", "avg"),
            "drop_rate": float(model.get("drop_rate") or 0.0),
            "drop_path_rate": model.get("drop_path_rate"),
            "band_mapping": model.get("band_mapping"),
            "use_ema": bool(model.get("use_ema", False)),
            "dataset_band_names": dataset_bands,
            # enough to rebuild the architecture without the MAE checkpoint (evaluation, resume)
            "mae_model_kwargs": info["model_kwargs"],
            "band_index": info["band_index"],
            "num_input_bands": info["num_input_bands"],
        }
        if model_kwargs["init"] not in ("pretrained", "scratch"):
            raise FamilyParamsError(f"finetune.model.init must be pretrained or scratch, got {model_kwargs['init']!r}")
        log.info("finetune: %s encoder of %s (%s), image %d px, pos embed %s, %d classes", model_kwargs["mode"],
                 checkpoint, model_kwargs["init"], image_size, info["pos_embed"], space.num_classes)
        stats = {**band_stats, **info["band_stats"]} if info["band_stats"] else band_stats
        return ModelSetup(model_kwargs, image_size, stats,
                          run_label=f"mae-{model_kwargs['mode']}-{model_kwargs['init']}",
                          metadata={"mae_checkpoint": str(checkpoint), "mae_band_names": info["band_names"],
                                    "mae_wavelengths_nm": info["wavelengths_nm"]})

    def build_model(self, model_kwargs: Mapping[str, Any]) -> nn.Module:
        if model_kwargs.get("init") == "scratch":
            return self.rebuild_for_checkpoint(model_kwargs)
        model, _ = mae_classifier_from_checkpoint(
            model_kwargs["checkpoint"], model_kwargs["num_classes"], image_size=model_kwargs["image_size"],
            mode=model_kwargs["mode"], global_pool=model_kwargs["global_pool"],
            dataset_band_names=model_kwargs["dataset_band_names"], band_mapping=model_kwargs["band_mapping"],
            use_ema=model_kwargs["use_ema"], drop_rate=model_kwargs["drop_rate"],
            drop_path_rate=model_kwargs["drop_path_rate"])
        return model

    def rebuild_for_checkpoint(self, model_kwargs: Mapping[str, Any]) -> nn.Module:
        """The same architecture with freshly initialised weights (no MAE checkpoint read)."""
        mae_kwargs = {**model_kwargs["mae_model_kwargs"], "image_size": model_kwargs["image_size"]}
        if model_kwargs.get("drop_path_rate") is not None:
            mae_kwargs["drop_path_rate"] = float(model_kwargs["drop_path_rate"])
        with torch.random.fork_rng():
            mae = build_mae_model(mae_kwargs)
        return MAEEncoderClassifier(mae, model_kwargs["num_classes"], mode=model_kwargs["mode"],
                                    global_pool=model_kwargs["global_pool"], drop_rate=model_kwargs["drop_rate"],
                                    band_index=model_kwargs["band_index"],
                                    num_input_bands=model_kwargs["num_input_bands"])
