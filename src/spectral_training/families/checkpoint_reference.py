"""Where a family's parameter points at an earlier run's checkpoint (finetune from an MAE,
unet_seg from a unet_mim, sits_former from a sits_pretrain): one reading of that reference."""

from __future__ import annotations

import json
from pathlib import Path

from spectral_training.io.versioned import latest_version


def resolve_checkpoint(reference: str | Path, *, where: str, family: str, pipeline: str | None = None,
                       optional: bool = False) -> Path:
    """A checkpoint file from a ``.pt`` path, a run folder (best.pt, else last.pt) or a model manifest
    (``data/06_models/<dataset>/<family>_model.json``; a versioned manifest is a folder of versions,
    whose newest is read).

    Args:
        where: the parameter that holds the reference, for the error message.
        family: the family the checkpoint must come from, for the error message.
        pipeline: the pipeline that trains that family (default: the family's name).
        optional: the parameter may be null (training from scratch): the error says so.

    Raises:
        FileNotFoundError: nothing there, with the command that makes one.
    """
    path = latest_version(str(reference))
    if path.suffix == ".json" and path.is_file():
        manifest = json.loads(path.read_text())
        path = Path(manifest.get("best_checkpoint") or manifest.get("last_checkpoint") or "")
    elif path.is_dir():
        path = next((path / n for n in ("best.pt", "last.pt") if (path / n).is_file()), path / "best.pt")
    if not path.is_file():
        raise FileNotFoundError(
            f"{where}: no {family} checkpoint at {reference} ({path} does not exist). Train one with "
            f"`kedro run --pipeline {pipeline or family} --params dataset=<name>`, or point {where} at a .pt file, "
            f"a run folder or a {family}_model.json" + (", or set it to null to train from scratch" if optional else ""))
    return path
