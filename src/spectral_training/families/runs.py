"""Training any family: run folders and names, loaders, the shared engine, the model manifest.

A run's folder is ``<models_root>/<family>/<label>-<hash of the configuration>/``: the same
configuration is the same run (a rerun resumes it, ``train.resume: auto``), another configuration
gets another folder, so nothing is overwritten.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from spectral_training.families.base import Family, FamilySetup
from spectral_training.training import FitResult, TrainConfig, TrainingCallback, fit, make_loader

log = logging.getLogger(__name__)

# Settings that decide when to log or what to show, never what is trained.
_VOLATILE_TRAIN_KEYS = ("resume", "progress", "log_every_steps")


def run_id(family: str, setup: FamilySetup, params: Mapping[str, Any]) -> str:
    """``<label>-<hash>`` of everything that decides what is trained (data order and model included)."""
    config = {
        "family": family,
        "model": setup.model_kwargs,
        "transforms": params.get("transforms", {}),
        "train": {k: v for k, v in params.get("train", {}).items() if k not in _VOLATILE_TRAIN_KEYS},
        "loader": {k: v for k, v in params.get("loader", {}).items() if k != "num_workers"},
        **{name: params[name] for name in sorted(params) if name not in
           ("model", "transforms", "train", "loader", "evaluation")},
    }
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return f"{setup.run_label}-{digest}"


def family_runs_root(models_root: str | Path, family: str) -> Path:
    return Path(models_root) / family


@dataclass
class TrainedRun:
    """What :func:`train_family` returns: the engine's result, the manifest and the run's name."""

    result: FitResult
    manifest: dict
    run_name: str


def train_family(
    family: Family,
    setup: FamilySetup,
    params: Mapping[str, Any],
    models_root: str | Path,
    *,
    run_name: str | None = None,
    callbacks: Sequence[TrainingCallback] = (),
    device: str | torch.device | None = None,
) -> TrainedRun:
    """Train the family's model on ``setup`` with the shared engine; returns the run and its manifest."""
    config = TrainConfig.from_dict(dict(params["train"]), source=f"{family.name}.train")
    name = run_name or run_id(family.name, setup, params)
    run_dir = family_runs_root(models_root, family.name) / name
    if len(setup.train_set) == 0:
        raise ValueError("the train split is empty: check ingestion.splits and the ingestion report")
    loader_params = params["loader"]
    batch_size = int(loader_params.get("batch_size", 16))
    num_workers = int(loader_params.get("num_workers", 0))
    train_loader = make_loader(setup.train_set, batch_size, shuffle=True, seed=config.seed, num_workers=num_workers,
                               drop_last=len(setup.train_set) > batch_size)
    val_loader = (make_loader(setup.val_set, batch_size, shuffle=False, seed=config.seed, num_workers=num_workers)
                  if len(setup.val_set) else None)
    torch.manual_seed(config.seed)  # the weights' initialisation
    model = family.build_model(setup.model_kwargs)
    log.info("%s %s: %d train / %d val samples, run folder %s", family.name, name, len(setup.train_set),
             len(setup.val_set), run_dir)
    metadata = {**setup.metadata, "family": family.name, "run_name": name}
    result = fit(model, train_loader, val_loader, config, run_dir=run_dir, metadata=metadata,
                 callbacks=list(callbacks), device=device, forward_fn=family.make_forward(setup),
                 val_metrics=family.validation_metrics(setup))
    return TrainedRun(result, manifest_of(family, setup, name, run_dir, result), name)


def manifest_of(family: Family, setup: FamilySetup, name: str, run_dir: Path, result: FitResult) -> dict:
    """The trained model's manifest: where its checkpoints are and how to rebuild it."""
    return {
        "family": family.name,
        "run_name": name,
        "run_dir": str(run_dir),
        "best_checkpoint": str(result.best_checkpoint) if result.best_checkpoint else None,
        "last_checkpoint": str(result.last_checkpoint) if result.last_checkpoint else None,
        "stopped_reason": result.stopped_reason,
        "monitor": result.monitor,
        "mode": result.mode,
        "best_metric": result.best_metric,
        "best_val_loss": result.best_val_loss,
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "steps": result.steps,
        "resumed": result.resumed,
        "skipped_sample_ids": list(result.skipped_sample_ids),
        "model_kwargs": setup.model_kwargs,
        "band_names": setup.metadata.get("band_names"),
        "wavelengths_nm": setup.metadata.get("wavelengths_nm"),
        **({"class_names": setup.metadata["class_names"]} if "class_names" in setup.metadata else {}),
    }
