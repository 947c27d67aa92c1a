"""Building the spectral MAE from the family's parameters and the store."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from spectral_training.cubes.store import CubeStore
from spectral_training.families.params import FamilyParamsError
from spectral_training.models import build_mae
from spectral_training.models.mae import MaskedAutoencoderViT
from spectral_training.models.variants import MAE_VARIANTS

# Keys of the `model` block that describe how to build the model rather than being build_mae
# arguments themselves.
NOT_BUILD_ARGS = ("variant", "use_wavelengths")
BUILD_ARGS = tuple(p for p in inspect.signature(MaskedAutoencoderViT.__init__).parameters
                   if p not in ("self", "num_bands", "device", "wavelengths_nm"))


def band_stats_matching(band_stats: dict, store: CubeStore) -> None:
    bands = store.info["num_bands"]
    if len(band_stats["mean"]) != bands:
        raise ValueError(
            f"band_stats has {len(band_stats['mean'])} bands but the store {store.path} has {bands}: "
            f"rerun normalisation_stats for this dataset"
        )


def mae_build_kwargs(model_params: Mapping[str, Any], store_info: Mapping[str, Any]) -> dict:
    """Arguments of :func:`build_mae` for this store: variant, bands, image size and wavelengths.

    The variant's encoder size comes from ``MAE_VARIANTS`` (the one table of sizes); any of its
    fields given in ``model`` overrides it, and the resolved sizes are kept in the run's metadata.
    """
    variant = model_params.get("variant", "tiny")
    if variant not in MAE_VARIANTS:
        raise FamilyParamsError(f"mae.model.variant '{variant}' is unknown; choose one of: {', '.join(MAE_VARIANTS)}")
    kwargs: dict[str, Any] = dict(MAE_VARIANTS[variant].as_kwargs())
    kwargs.update({k: v for k, v in model_params.items() if k not in NOT_BUILD_ARGS})
    kwargs.setdefault("image_size", store_info["tile_size"])
    wavelengths = store_info.get("wavelengths_nm")
    if model_params.get("use_wavelengths", True) and wavelengths:
        kwargs["wavelengths_nm"] = [float(w) for w in wavelengths]
    if kwargs.get("loss_weights") is not None:
        kwargs["loss_weights"] = dict(kwargs["loss_weights"])
    if kwargs.get("value_range") is not None:
        kwargs["value_range"] = tuple(kwargs["value_range"])
    return {"variant": variant, "num_bands": int(store_info["num_bands"]), **kwargs}


def build_mae_model(model_kwargs: Mapping[str, Any]) -> MaskedAutoencoderViT:
    """The model ``mae_build_kwargs`` (or a checkpoint's ``metadata.model_kwargs``) describes."""
    kwargs = dict(model_kwargs)
    if kwargs.get("value_range") is not None:
        kwargs["value_range"] = tuple(kwargs["value_range"])  # checkpoints store tuples as lists
    return build_mae(kwargs.pop("variant"), kwargs.pop("num_bands"), kwargs.pop("image_size"), **kwargs)
