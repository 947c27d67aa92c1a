"""What the U-Net families share: the U-Net's build arguments and finding a unet_mim checkpoint."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from spectral_training.families.params import FamilyParamsError
from spectral_training.families.checkpoint_reference import resolve_checkpoint

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
    """A ``family`` checkpoint from a .pt path, a run folder or a model manifest (versioned or not)."""
    return resolve_checkpoint(reference, where=where, family=family, optional=True)
