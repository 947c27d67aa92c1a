"""Checkpoint files: atomic writes, the last/rollback/best trio, loading, checkpoint-safe metadata.

Layout of a run directory written by the engine:

    run_dir/last.pt       newest state; what `resume` continues from
    run_dir/rollback.pt   the state before the newest *healthy* checkpoint; what a NaN streak
                          rolls back to (kept until a newer healthy checkpoint replaces it)
    run_dir/best.pt       the epoch-end state with the best monitored metric so far
                          (`train.monitor` in the direction `train.mode`; val_loss, min by default)
    run_dir/guard_report.json  bad steps, rollbacks and skipped batches of the run

All three .pt files are full checkpoints (see `CHECKPOINT_FORMAT_VERSION` and
`run_state.RunCheckpoints.checkpoint_dict`); rollback.pt and best.pt are hard links of an earlier last.pt when the file
system allows it, so they cost no extra writes.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import shutil
from pathlib import Path, PurePath
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

logger = logging.getLogger("spectral_training.training")

CHECKPOINT_FORMAT_VERSION = 1
TEMP_MARKER = ".tmp-"  # temp files are named ".<target>.tmp-<pid>" next to their target


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, unreadable or not one the engine wrote."""


def atomic_torch_save(obj: Any, path: Path) -> None:
    """Write `obj` with torch.save so that `path` is either the old file or the complete new one.

    The bytes go to a temp file in the same directory (same file system, so the rename is
    atomic), are flushed and fsync'ed, then os.replace puts the file in place and the directory
    is fsync'ed so the rename itself survives a power cut. A crash at any point leaves at most a
    stray temp file, which `remove_stale_temp_files` clears and no loader ever reads.
    """
    path = Path(path)
    temp_path = path.with_name(f".{path.name}{TEMP_MARKER}{os.getpid()}")
    try:
        with open(temp_path, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_path, path)
    except BaseException:
        temp_path.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def atomic_link(source: Path, target: Path) -> None:
    """Make `target` an atomic copy of `source` (a hard link when possible, else a byte copy)."""
    temp_path = target.with_name(f".{target.name}{TEMP_MARKER}{os.getpid()}")
    temp_path.unlink(missing_ok=True)
    try:
        try:
            os.link(source, temp_path)
        except OSError:  # file systems without hard links
            shutil.copyfile(source, temp_path)
            with open(temp_path, "rb+") as handle:
                os.fsync(handle.fileno())
        os.replace(temp_path, target)
    except BaseException:
        temp_path.unlink(missing_ok=True)
        raise
    _fsync_directory(target.parent)


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_temp_files(run_dir: Path) -> list[Path]:
    """Delete temp files left by a writer that died mid-write; returns what was removed."""
    removed = []
    for candidate in Path(run_dir).glob(f".*{TEMP_MARKER}*"):
        candidate.unlink(missing_ok=True)
        removed.append(candidate)
    if removed:
        logger.warning("removed %d partial checkpoint file(s) left by an interrupted write: %s",
                       len(removed), ", ".join(p.name for p in removed))
    return removed


class CheckpointFiles:
    """The last/rollback/best files of one run directory and the rules for replacing them."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.last = self.run_dir / "last.pt"
        self.rollback = self.run_dir / "rollback.pt"
        self.best = self.run_dir / "best.pt"
        self.report = self.run_dir / "guard_report.json"

    def write(self, state: Mapping[str, Any], *, healthy: bool, is_best: bool) -> Path:
        """Save `state` as the new last.pt.

        Args:
            state: the checkpoint dict.
            healthy: True when the step before this checkpoint updated the weights normally.
                Only then does the current last.pt become the rollback point: during a NaN
                streak the old rollback point is kept, because the newest states are suspect.
            is_best: also make best.pt this checkpoint.
        Returns:
            The path of last.pt.
        """
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if healthy and self.last.exists():
            atomic_link(self.last, self.rollback)
        atomic_torch_save(dict(state), self.last)
        if is_best:
            atomic_link(self.last, self.best)
        return self.last

    def rollback_source(self) -> Path:
        """The file a NaN streak rolls back to: rollback.pt, else last.pt."""
        if self.rollback.exists():
            return self.rollback
        if self.last.exists():
            return self.last
        raise CheckpointError(f"{self.run_dir}: no checkpoint to roll back to (neither rollback.pt nor last.pt)")


def load_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module | None = None,
    *,
    map_location: str | torch.device = "cpu",
    use_ema: bool = False,
    strict: bool = True,
) -> dict[str, Any]:
    """Read a checkpoint written by `fit` (safely: torch.load with weights_only=True).

    Args:
        path: a .pt file (last.pt, best.pt, rollback.pt) or a run directory (then last.pt).
        model: when given, its weights are replaced by the checkpoint's.
        map_location: where tensors are loaded.
        use_ema: load the EMA weights into `model` instead of the raw ones.
        strict: passed to `model.load_state_dict`.
    Returns:
        The checkpoint dict: "model", "optimizer", "scheduler", "scaler", "ema", "rng",
        "progress", "guard", "early_stopping", "history", "config", "metadata", ...
    Raises:
        CheckpointError: the file is missing, unreadable, not an engine checkpoint, or
            `use_ema` was asked of a checkpoint without EMA weights.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "last.pt"
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:  # the weights-only unpickler met an object that is not data
        raise CheckpointError(
            f"{path}: refused: it holds pickled Python objects, not only tensors and plain values "
            f"({_refused_object(error)}). Checkpoints written by spectral_training never do; this file comes "
            "from elsewhere, and unpickling it could run code. It was not loaded (torch.load(weights_only=True)); "
            "load it with weights_only=False only if you trust its source"
        ) from error
    except Exception as error:  # truncated file, not a torch file, ...
        raise CheckpointError(f"{path}: cannot be read as a checkpoint ({error})") from error
    if not isinstance(checkpoint, dict) or "format_version" not in checkpoint or "model" not in checkpoint:
        raise CheckpointError(f"{path}: not a checkpoint written by spectral_training.training.fit")
    if checkpoint["format_version"] > CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {checkpoint['format_version']} is newer than this code "
            f"understands ({CHECKPOINT_FORMAT_VERSION}); update spectral_training"
        )
    if model is not None:
        if use_ema:
            if checkpoint.get("ema") is None:
                raise CheckpointError(f"{path}: use_ema=True but the run was trained without EMA (ema: false)")
            model.load_state_dict(checkpoint["ema"]["module"], strict=strict)
        else:
            model.load_state_dict(checkpoint["model"], strict=strict)
    return checkpoint


def _refused_object(error: BaseException) -> str:
    """The line of torch's weights-only error that names the refused global, else its first line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    named = [line for line in lines if "GLOBAL" in line or "global" in line]
    return (named or lines or ["unknown object"])[0]


def to_checkpoint_safe(value: Any, where: str = "metadata") -> Any:
    """Convert `value` into types `torch.load(weights_only=True)` accepts.

    Numpy arrays become nested lists, numpy scalars Python numbers, paths strings, tuples and
    sets lists; tensors are detached and moved to CPU. Dict keys must be strings or ints.
    Raises:
        TypeError: naming the offending entry (e.g. metadata['transform']['fn']) for anything
            else, such as functions, dataclasses or custom objects; convert those yourself.
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, (str, int)) or isinstance(key, bool):
                raise TypeError(f"{where}: key {key!r} is a {type(key).__name__}; use str keys")
            out[key] = to_checkpoint_safe(item, f"{where}[{key!r}]")
        return out
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
        return [to_checkpoint_safe(item, f"{where}[{index}]") for index, item in enumerate(items)]
    raise TypeError(
        f"{where} is a {type(value).__module__}.{type(value).__name__}, which a checkpoint loaded with "
        "torch.load(weights_only=True) cannot hold; pass plain dicts, lists, str, int, float, bool, "
        "None, numpy arrays or tensors"
    )


def json_safe(value: Any) -> Any:
    """Copy of `value` fit for strict JSON: NaN/Inf floats become the strings 'nan', 'inf', '-inf'."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, Mapping):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, PurePath):
        return str(value)
    return value
