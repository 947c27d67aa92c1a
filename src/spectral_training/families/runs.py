"""Training any family: run folders and names, loaders, the shared engine, the model manifest.

A run is its configuration and the data it trains on. Its folder is
``<models_root>/<family>/<label>-<config hash>-d<data hash>/``: the same configuration on the same
data is the same run (a rerun resumes it, or says it already ended), another configuration or
grown data gets another folder, so nothing is overwritten. A rerun on grown data starts from the
same configuration's newest run (``train.on_new_data: continue``) or from fresh weights (``fresh``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from spectral_training.families.base import Family, FamilySetup
from spectral_training.training import FitResult, TrainConfig, TrainingCallback, distributed, fit, make_loader
from spectral_training.training.checkpoint import CheckpointError, load_checkpoint
from spectral_training.training.launch import launch, prepare_processes

log = logging.getLogger(__name__)

# Settings that decide when to log or what to show, or how a rerun starts, never what is trained.
_VOLATILE_TRAIN_KEYS = ("resume", "progress", "log_every_steps", "on_new_data", "rdzv_endpoint", "rdzv_backend",
                        "compile", "compile_backend")
_TRAINING_SPLITS = ("train", "val")
_DATA_TAG = "-d"


def training_data_hash(sample_index: pd.DataFrame) -> str:
    """A short hash of the samples a run trains and validates on (their sorted content hashes).

    Adding files that put new samples in train or val changes it; samples added to the test split
    only, or a reordered index, do not.
    """
    rows = sample_index[sample_index["split"].isin(_TRAINING_SPLITS)]
    digest = hashlib.sha256()
    for content_hash in sorted(rows["content_hash"].astype(str)):
        digest.update(content_hash.encode())
    return digest.hexdigest()[:10]


def _digest(config: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:10]


def config_key(params: Mapping[str, Any]) -> str:
    """A hash of a family's resolved parameter block, without the settings that change nothing trained.

    Computable before any data is read (the MLflow hook uses it to pick the run to rejoin).
    """
    return _digest({
        **{name: params[name] for name in params if name not in ("train", "loader", "evaluation")},
        "train": {k: v for k, v in params.get("train", {}).items() if k not in _VOLATILE_TRAIN_KEYS},
        "loader": {k: v for k, v in params.get("loader", {}).items() if k != "num_workers"},
    })


def run_id(family: str, setup: FamilySetup, params: Mapping[str, Any], data_hash: str | None = None) -> str:
    """``<label>-<config hash>[-d<data hash>]``: everything that decides what is trained (data order,
    model and, when given, the training data)."""
    config = {
        "family": family,
        "model": setup.model_kwargs,
        "transforms": params.get("transforms", {}),
        "train": {k: v for k, v in params.get("train", {}).items() if k not in _VOLATILE_TRAIN_KEYS},
        "loader": {k: v for k, v in params.get("loader", {}).items() if k != "num_workers"},
        **{name: params[name] for name in sorted(params) if name not in
           ("model", "transforms", "train", "loader", "evaluation")},
    }
    name = f"{setup.run_label}-{_digest(config)}"
    return f"{name}{_DATA_TAG}{data_hash}" if data_hash else name


def family_runs_root(models_root: str | Path, family: str) -> Path:
    return Path(models_root) / family


def previous_run(runs_root: Path, name: str) -> Path | None:
    """The newest other run folder of the same configuration (same ``<label>-<config hash>``, any
    data), with a ``last.pt``; folders named before data hashes existed count too."""
    configuration = name.split(_DATA_TAG)[0] if _DATA_TAG in name else name
    candidates = [folder for folder in runs_root.glob(f"{configuration}*")
                  if folder.name != name and (folder.name == configuration
                                              or folder.name.startswith(configuration + _DATA_TAG))
                  and (folder / "last.pt").is_file()]
    return max(candidates, key=lambda folder: (folder / "last.pt").stat().st_mtime, default=None)


def _start_from_parent(model: torch.nn.Module, parent: Path) -> str | None:
    """Load the parent run's last weights into ``model``; returns the parent's name, or None (with a
    warning) when they do not fit this model."""
    try:
        checkpoint = load_checkpoint(parent / "last.pt")
        model.load_state_dict(checkpoint["model"])
    except (CheckpointError, RuntimeError, KeyError) as error:
        log.warning("the previous run %s does not fit this model (%s); training from fresh weights",
                    parent, str(error).splitlines()[0])
        return None
    progress = checkpoint.get("progress", {})
    log.info("new training data: continuing from %s (its last checkpoint: epoch %s, step %s, %s); "
             "set train.on_new_data=fresh to train from scratch instead", parent, progress.get("epoch"),
             progress.get("global_step"), checkpoint.get("stopped_reason") or "unfinished")
    return parent.name


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
    data_hash: str | None = None,
    callbacks: Sequence[TrainingCallback] = (),
    device: str | torch.device | None = None,
) -> TrainedRun:
    """Train the family's model on ``setup`` with the shared engine; returns the run and its manifest.

    ``data_hash`` (:func:`training_data_hash`) makes the data part of the run's identity: a new
    hash is a new run folder, started from the configuration's previous run or afresh
    (``train.on_new_data``).
    """
    config = TrainConfig.from_dict(dict(params["train"]), source=f"{family.name}.train")
    if prepare_processes(config):  # train.nproc_per_node / nnodes > 1: torchrun workers make this same call
        return launch(train_family, family, setup, params, models_root, config=config, run_name=run_name,
                      data_hash=data_hash, callbacks=callbacks, device=device)
    name = run_name or run_id(family.name, setup, params, data_hash)
    run_dir = family_runs_root(models_root, family.name) / name
    if len(setup.train_set) == 0:
        raise ValueError("the train split is empty: check ingestion.splits and the ingestion report")
    loader_params = params["loader"]
    batch_size = int(loader_params.get("batch_size", 16))
    num_workers = loader_params.get("num_workers", 0)  # an integer or "auto" (make_loader resolves it)
    train_loader = make_loader(setup.train_set, batch_size, shuffle=True, seed=config.seed, num_workers=num_workers,
                               drop_last=len(setup.train_set) > batch_size)
    val_loader = (make_loader(setup.val_set, batch_size, shuffle=False, seed=config.seed, num_workers=num_workers)
                  if len(setup.val_set) else None)
    torch.manual_seed(config.seed)  # the weights' initialisation
    model = family.build_model(setup.model_kwargs)
    lineage = _lineage(run_dir, model, config, data_hash)
    log.info("%s %s: %d train / %d val samples, run folder %s", family.name, name, len(setup.train_set),
             len(setup.val_set), run_dir)
    metadata = {**setup.metadata, "family": family.name, "run_name": name, **lineage}
    started = _Started()
    result = fit(model, train_loader, val_loader, config, run_dir=run_dir, metadata=metadata,
                 callbacks=[started, *callbacks], device=device, forward_fn=family.make_forward(setup),
                 val_metrics=family.validation_metrics(setup))
    if not started.value:
        log.info("unchanged: %s already trained this configuration on this training data (data hash %s) and "
                 "ended (%s); nothing to train", run_dir, data_hash or "not tracked", result.stopped_reason)
    manifest = {**manifest_of(family, setup, name, run_dir, result), **lineage, "config_key": config_key(params),
                "trained_this_run": started.value}
    return TrainedRun(result, manifest, name)


class _Started(TrainingCallback):
    """Whether ``fit`` trained at all (it returns before ``on_fit_start`` when the run already ended)."""

    value = False

    def on_fit_start(self, config, state) -> None:
        self.value = True


_LINEAGE_FILE = "lineage.json"


def _lineage(run_dir: Path, model: torch.nn.Module, config: TrainConfig, data_hash: str | None) -> dict:
    """``{"data_hash", "continued_from"}`` of the run in ``run_dir``, recorded in the folder when it starts.

    A new run on new data loads the previous run's weights into ``model`` (``on_new_data: continue``).
    """
    if data_hash is None:
        return {}
    record = run_dir / _LINEAGE_FILE
    if record.is_file():  # the run exists: resuming it, or it already ended
        lineage = json.loads(record.read_text())
        if lineage.get("continued_from") and not (run_dir / "last.pt").is_file():  # killed before its first checkpoint
            _start_from_parent(model, run_dir.parent / lineage["continued_from"])
        return lineage
    parent = None
    previous = previous_run(run_dir.parent, run_dir.name) if config.resume is not False else None
    if previous is not None and config.on_new_data == "continue":
        parent = _start_from_parent(model, previous)
    elif previous is not None:
        log.info("new training data: training from fresh weights (train.on_new_data=fresh); %s stays as it is",
                 previous)
    lineage = {"data_hash": data_hash, "continued_from": parent}
    if distributed.is_main_process():
        run_dir.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps(lineage))
    return lineage


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
