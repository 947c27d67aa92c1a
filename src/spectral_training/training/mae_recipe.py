"""MAE pretraining from parameters: model, transforms and loaders from the store, then `fit`.

Plain Python, no Kedro: the ``mae_training`` node calls :func:`pretrain_mae` with the loaded
catalog entries and the ``model``, ``transforms``, ``loader`` and ``train`` parameter blocks.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from spectral_training.cubes.dataset import NormalisedTileDataset
from spectral_training.cubes.store import CubeStore
from spectral_training.cubes.transforms import Compose, build_transforms
from spectral_training.models import build_mae
from spectral_training.training.callbacks import TrainingCallback
from spectral_training.training.config import TrainConfig
from spectral_training.training.data import make_loader
from spectral_training.training.engine import FitResult, fit

log = logging.getLogger(__name__)

# Keys of the `model` block that describe how to build the model rather than being build_mae
# arguments themselves.
_NOT_BUILD_ARGS = {"variant", "use_wavelengths", "variants"}


@dataclass
class MAESetup:
    """Everything built from the parameters and the store, before training."""

    model_kwargs: dict  # build_mae(**model_kwargs) rebuilds the model exactly
    train_transform: Compose
    eval_transform: Compose
    train_set: NormalisedTileDataset
    val_set: NormalisedTileDataset
    metadata: dict


def mae_build_kwargs(model_params: dict, store_info: dict, variant_table: dict | None = None) -> dict:
    """Arguments of :func:`build_mae` for this store: bands, image size and wavelengths.

    ``variant_table`` (``mae_variants`` in ``parameters/model_families.yml``) supplies the encoder
    size of the chosen variant, so the size a run used is visible in its parameters.
    """
    variant = model_params.get("variant", "tiny")
    kwargs: dict[str, Any] = {}
    if variant_table:
        if variant not in variant_table:
            raise ValueError(f"model.variant '{variant}' is not in mae_variants; choose one of: {', '.join(variant_table)}")
        kwargs.update(variant_table[variant])
    kwargs.update({k: v for k, v in model_params.items() if k not in _NOT_BUILD_ARGS})
    if "image_size" not in kwargs:
        kwargs["image_size"] = store_info["tile_size"]
    wavelengths = store_info.get("wavelengths_nm")
    if model_params.get("use_wavelengths", True) and wavelengths:
        kwargs["wavelengths_nm"] = [float(w) for w in wavelengths]
    if "loss_weights" in kwargs and kwargs["loss_weights"] is not None:
        kwargs["loss_weights"] = dict(kwargs["loss_weights"])
    if "value_range" in kwargs and kwargs["value_range"] is not None:
        kwargs["value_range"] = tuple(kwargs["value_range"])
    return {"variant": variant, "num_bands": int(store_info["num_bands"]), **kwargs}


def build_mae_model(model_kwargs: dict) -> torch.nn.Module:
    """The model ``mae_build_kwargs`` (or a checkpoint's ``metadata.model_kwargs``) describes."""
    kwargs = dict(model_kwargs)
    if kwargs.get("value_range") is not None:
        kwargs["value_range"] = tuple(kwargs["value_range"])  # checkpoints store tuples as lists
    return build_mae(kwargs.pop("variant"), kwargs.pop("num_bands"), kwargs.pop("image_size"), **kwargs)


def build_mae_transforms(transform_params: dict, band_stats: dict) -> tuple[Compose, Compose]:
    return (
        build_transforms(transform_params.get("train"), band_stats, where="transforms.train"),
        build_transforms(transform_params.get("eval"), band_stats, where="transforms.eval"),
    )


def prepare_mae(
    store: CubeStore,
    sample_index: pd.DataFrame,
    band_stats: dict,
    model_params: dict,
    transform_params: dict,
    variant_table: dict | None = None,
) -> MAESetup:
    info = store.info
    if len(band_stats["mean"]) != info["num_bands"]:
        raise ValueError(
            f"band_stats has {len(band_stats['mean'])} bands but the store {store.path} has {info['num_bands']}: "
            f"rerun normalisation_stats for this dataset"
        )
    model_kwargs = mae_build_kwargs(model_params, info, variant_table)
    train_t, eval_t = build_mae_transforms(transform_params, band_stats)
    metadata = {
        "family": "mae",
        "model_kwargs": model_kwargs,
        "band_names": info["band_names"],
        "wavelengths_nm": info["wavelengths_nm"],
        "band_stats": {"mean": band_stats["mean"], "std": band_stats["std"], "split": band_stats.get("split", "train")},
        "transforms": {"train": transform_params.get("train") or [], "eval": transform_params.get("eval") or []},
        "store": str(store.path),
        "tile_size": info["tile_size"],
    }
    return MAESetup(
        model_kwargs=model_kwargs,
        train_transform=train_t,
        eval_transform=eval_t,
        train_set=NormalisedTileDataset(store, sample_index, "train", train_t),
        val_set=NormalisedTileDataset(store, sample_index, "val", eval_t),
        metadata=metadata,
    )


def run_id(model_kwargs: dict, transform_params: dict, train_params: dict, loader_params: dict) -> str:
    """``<variant>-<hash of the configuration>``: the same configuration is the same run (and resumes)."""
    volatile = {"resume", "progress", "log_every_steps"}
    config = {
        "model": model_kwargs,
        "transforms": transform_params,
        "train": {k: v for k, v in train_params.items() if k not in volatile},
        "loader": {k: v for k, v in loader_params.items() if k != "num_workers"},
    }
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return f"{model_kwargs['variant']}-{digest}"


def pretrain_mae(
    setup: MAESetup,
    train_params: dict,
    loader_params: dict,
    runs_root: str | Path,
    *,
    run_name: str | None = None,
    transform_params: dict | None = None,
    callbacks: Sequence[TrainingCallback] = (),
    device: str | torch.device | None = None,
) -> tuple[FitResult, dict]:
    """Train the MAE; returns the fit result and a manifest of the trained model.

    Checkpoints go to ``runs_root/<run name>/``: a rerun with the same configuration resumes
    there (``train.resume: auto``); another configuration gets another folder, so nothing is
    overwritten.
    """
    config = TrainConfig.from_dict(dict(train_params), source="parameters_mae_training.yml:train")
    name = run_name or run_id(setup.model_kwargs, transform_params or {}, train_params, loader_params)
    run_dir = Path(runs_root) / name
    if len(setup.train_set) == 0:
        raise ValueError("the train split is empty: check ingestion.splits and the ingestion report")
    batch_size = int(loader_params.get("batch_size", 16))
    num_workers = int(loader_params.get("num_workers", 0))
    train_loader = make_loader(setup.train_set, batch_size, shuffle=True, seed=config.seed, num_workers=num_workers,
                               drop_last=len(setup.train_set) > batch_size)
    val_loader = make_loader(setup.val_set, batch_size, shuffle=False, seed=config.seed, num_workers=num_workers) if len(setup.val_set) else None
    torch.manual_seed(config.seed)  # the weights' initialisation
    model = build_mae_model(setup.model_kwargs)
    log.info("MAE %s: %d train / %d val samples, run folder %s", name, len(setup.train_set), len(setup.val_set), run_dir)
    metadata = {**setup.metadata, "run_name": name}
    result = fit(model, train_loader, val_loader, config, run_dir=run_dir, metadata=metadata,
                 callbacks=list(callbacks), device=device)
    manifest = {
        "family": "mae",
        "run_name": name,
        "run_dir": str(run_dir),
        "best_checkpoint": str(result.best_checkpoint) if result.best_checkpoint else None,
        "last_checkpoint": str(result.last_checkpoint) if result.last_checkpoint else None,
        "stopped_reason": result.stopped_reason,
        "best_val_loss": result.best_val_loss,
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "steps": result.steps,
        "resumed": result.resumed,
        "skipped_sample_ids": list(result.skipped_sample_ids),
        "model_kwargs": setup.model_kwargs,
        "band_names": setup.metadata["band_names"],
        "wavelengths_nm": setup.metadata["wavelengths_nm"],
    }
    return result, manifest
