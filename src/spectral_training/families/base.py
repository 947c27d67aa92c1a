"""The family contract: what a model family declares, and nothing that families share.

A family says how its model is built from the band count, the image size and its parameters;
how a batch becomes a loss and outputs; what it reads from the store (its datasets); which
validation metric picks ``best.pt`` and in which direction; and how it is evaluated. Run
folders, names, checkpoints, resume, pre-flight validation and tracking are shared
(:mod:`spectral_training.families.runs`, :mod:`spectral_training.families.checks`) and name no
family.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pandas as pd
import torch
from matplotlib.figure import Figure
from torch import nn
from torch.utils.data import Dataset

from spectral_training.cubes.store import CubeStore
from spectral_training.cubes.transforms import Compose
from spectral_training.training import default_forward


@dataclass
class FamilySetup:
    """Everything a family builds from its parameters and the store, before training.

    ``model_kwargs`` rebuilds the model exactly (``family.build_model(model_kwargs)``) and is
    stored in every checkpoint's metadata, with the band list, band stats and transforms.
    """

    model_kwargs: dict
    train_transform: Compose
    eval_transform: Compose
    train_set: Dataset
    val_set: Dataset
    metadata: dict
    image_size: int  # px the model takes; transform validation compares the transforms' output with it
    num_bands: int  # bands the model takes
    run_label: str  # the readable part of the run folder's name, e.g. "tiny" or "resnet50"
    extra: dict[str, Any] = field(default_factory=dict)  # family-specific (class weights, ...)


class Family:
    """Base class of the model families; subclasses fill in what differs.

    Class attributes:
        name: the registry name, also the top key of its parameter file.
        extra_blocks: parameter blocks it reads besides model/transforms/loader/train/evaluation.
        plot_names: the figures :meth:`evaluate` returns, in the pipeline's output order.
    """

    name: ClassVar[str] = ""
    extra_blocks: ClassVar[tuple[str, ...]] = ()
    plot_names: ClassVar[tuple[str, ...]] = ()
    model_keys: ClassVar[tuple[str, ...] | None] = None
    evaluation_keys: ClassVar[tuple[str, ...] | None] = None

    # ------------------------------------------------------------------ what every family declares
    def prepare(self, store: CubeStore, sample_index: pd.DataFrame, band_stats: dict, params: dict) -> FamilySetup:
        """Datasets, transforms, the model's build arguments and the checkpoint metadata."""
        raise NotImplementedError

    def build_model(self, model_kwargs: Mapping[str, Any]) -> nn.Module:
        """The model ``model_kwargs`` (from :meth:`prepare` or a checkpoint) describes."""
        raise NotImplementedError

    def forward(self, model: nn.Module, batch: Mapping[str, Any]) -> Mapping[str, Any]:
        """A batch (already on the device) -> ``{"loss": scalar, ...outputs}``: the engine's forward_fn."""
        return default_forward(model, batch)

    def make_forward(self, setup: FamilySetup) -> Callable[[nn.Module, Mapping[str, Any]], Mapping[str, Any]]:
        """The training forward for this setup (a family with per-run state, e.g. class weights, binds it here)."""
        return self.forward

    def validation_metrics(self, setup: FamilySetup) -> Callable[[], Any] | None:
        """A factory of the engine's per-epoch validation metric object, or None (val loss only)."""
        return None

    def evaluate(
        self,
        store: CubeStore,
        sample_index: pd.DataFrame,
        band_stats: dict,
        manifest: dict,
        params: dict,
        history: list[dict],
    ) -> tuple[dict, dict[str, float], dict[str, Figure]]:
        """Score the trained model: (metrics report, flat numbers for MLflow, figures by plot name)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<family {self.name}>"


def run_metadata(family: str, store: CubeStore, band_stats: Mapping[str, Any], transforms: Mapping[str, Any],
                 model_kwargs: Mapping[str, Any]) -> dict:
    """What every checkpoint of a family's run carries: how to rebuild the model and feed it data."""
    info = store.info
    return {
        "family": family,
        "model_kwargs": dict(model_kwargs),
        "band_names": info["band_names"],
        "wavelengths_nm": info["wavelengths_nm"],
        "band_stats": {"mean": band_stats["mean"], "std": band_stats["std"], "split": band_stats.get("split", "train")},
        "transforms": {"train": transforms.get("train") or [], "eval": transforms.get("eval") or []},
        "store": str(store.path),
        "tile_size": info["tile_size"],
    }


def checkpoint_path(manifest: Mapping[str, Any], which: str) -> str:
    """The manifest's ``best`` or ``last`` checkpoint (best falls back to last when absent)."""
    if which not in ("best", "last"):
        raise ValueError(f"evaluation.checkpoint must be best or last, got {which!r}")
    path = manifest.get(f"{which}_checkpoint") or manifest.get("last_checkpoint")
    if not path:
        raise ValueError(f"the model manifest of run {manifest.get('run_name')} names no checkpoint: train first")
    return str(path)


def empty_split_fallback(sample_index: pd.DataFrame, split: str, log) -> str:
    """``split`` when it has samples, else val, else train (with a warning)."""
    if (sample_index["split"] == split).any():
        return split
    fallback = "val" if (sample_index["split"] == "val").any() else "train"
    log.warning("the %s split is empty; evaluating on %s instead", split, fallback)
    return fallback


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))
