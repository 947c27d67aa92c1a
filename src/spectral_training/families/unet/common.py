"""What the U-Net families share: the U-Net's build arguments and finding a unet_mim checkpoint."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from spectral_training.families.params import FamilyParamsError
from spectral_training.io.versioned import latest_version

# The `model` keys that shape the U-Net itself (every U-Net family reads them).
UNET_KEYS = ("encoder", "decoder_channels", "encoder_kwargs", "image_size")


def unet_kwargs(model: Mapping[str, Any], tile_size: int, where: str) -> dict:
    """encoder, decoder_channels, encoder_kwargs and image_size (default: the tile size), checked."""
    if not model.get("encoder"):
        raise FamilyParamsError(f"{where}.encoder is missing: a timm model with features_only, e.g. resnet18")
    channels = model.get("decoder_channels") or [128, 64, 48, 32, 24]
    if not all(isinstance(c, int) and c > 0 for c in channels):
        raise FamilyParamsError(f"{where}.decoder_channels must be positive integers, got {channels!r}")
    return {
        "encoder": str(model["encoder"]),
        "decoder_channels": [int(c) for c in channels],
        "encoder_kwargs": dict(model.get("encoder_kwargs") or {}),
        "image_size": int(model.get("image_size") or tile_size),
    }


def resolve_unet_checkpoint(reference: str | Path | None, *, where: str, family: str = "unet_mim") -> Path:
    """A checkpoint file from a .pt path, a run folder (best.pt, else last.pt) or a model manifest
    (``<models_root>/<family>_model.json``, versioned or not).

    Raises:
        FileNotFoundError: nothing there, with the command that makes one.
    """
    path = latest_version(str(reference))  # a versioned manifest is a folder of versions: the newest
    if path.suffix == ".json" and path.is_file():
        manifest = json.loads(path.read_text())
        path = Path(manifest.get("best_checkpoint") or manifest.get("last_checkpoint") or "")
    elif path.is_dir():
        path = next((path / n for n in ("best.pt", "last.pt") if (path / n).is_file()), path / "best.pt")
    if not path.is_file():
        raise FileNotFoundError(
            f"{where}: no {family} checkpoint at {reference} ({path} does not exist). Pretrain one with "
            f"`kedro run --pipeline {family} --params dataset=<name>`, point the parameter at a .pt file, a run "
            f"folder or a {family}_model.json, or set it to null to train from scratch")
    return path
