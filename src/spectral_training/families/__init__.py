"""Model families as plug-ins, found by name.

A new family is one package under ``families/``, one parameter file
``conf/base/parameters/families/<name>.yml`` (top key = the name) and one line in ``_REGISTRY``.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from typing import Any

from spectral_training.families.base import Family, FamilySetup
from spectral_training.families.params import FamilyParamsError, resolve_family_params


def _mae() -> Family:
    from spectral_training.families.mae import MAEFamily

    return MAEFamily()


def _classifier(name: str) -> Callable[[], Family]:
    def make() -> Family:
        from spectral_training.families.classifier import ClassifierFamily

        return ClassifierFamily(name)

    return make


def _finetune() -> Family:
    from spectral_training.families.finetune import FinetuneFamily

    return FinetuneFamily()


def _unet(name: str) -> Callable[[], Family]:
    def make() -> Family:
        from spectral_training.families import unet
        from spectral_training.families.unet.temporal import UNetTemporalFamily

        return {"unet_mim": unet.UNetMIMFamily, "unet_seg": unet.UNetSegFamily,
                "unet_temporal": UNetTemporalFamily}[name]()

    return make


def _sits(pretrain: bool) -> Callable[[], Family]:
    def make() -> Family:
        from spectral_training.families.sits import SitsFormerFamily, SitsPretrainFamily

        return SitsPretrainFamily() if pretrain else SitsFormerFamily()

    return make


# name -> (the pipeline that trains it, factory); imports stay lazy: a family's heavy
# dependencies load only when it is used.
_REGISTRY: dict[str, tuple[str, Callable[[], Family]]] = {
    "mae": ("mae_pretrain", _mae),
    "cnn": ("classify", _classifier("cnn")),
    "vit": ("classify", _classifier("vit")),
    "swin": ("classify", _classifier("swin")),
    "eva02": ("classify", _classifier("eva02")),
    "tv_vit": ("classify", _classifier("tv_vit")),
    "satellite_cnn": ("classify", _classifier("satellite_cnn")),
    "flood_cnn": ("classify", _classifier("flood_cnn")),
    "finetune": ("finetune", _finetune),
    "unet_mim": ("unet_mim", _unet("unet_mim")),
    "unet_seg": ("unet_seg", _unet("unet_seg")),
    "unet_temporal": ("unet_temporal", _unet("unet_temporal")),
    "sits_pretrain": ("sits_pretrain", _sits(True)),
    "sits_former": ("sits", _sits(False)),
}


def family_names(pipeline: str | None = None) -> list[str]:
    """Registered family names (those trained by ``pipeline`` when given)."""
    return [name for name, (trained_by, _) in _REGISTRY.items() if pipeline in (None, trained_by)]


def family_defaults(name: str) -> tuple[str, ...]:
    """The parameter blocks a family's block is merged over, most general first."""
    trained_by, _ = _REGISTRY[name]
    return ("training_defaults", "classifier_defaults") if trained_by in ("classify", "finetune") else ("training_defaults",)


def get_family(name: Any, *, pipeline: str | None = None) -> Family:
    """The family called ``name``; with ``pipeline``, it must be one that pipeline trains.

    Raises:
        FamilyParamsError: an unknown name (with the closest one and the full list), or a family
            of another pipeline (saying which pipeline trains it).
    """
    if name not in _REGISTRY:
        close = difflib.get_close_matches(str(name), list(_REGISTRY), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        choices = family_names(pipeline) if pipeline else list(_REGISTRY)
        raise FamilyParamsError(f"family '{name}' is unknown{hint}; choose one of: {', '.join(choices)}")
    trained_by, make = _REGISTRY[name]
    if pipeline is not None and trained_by != pipeline:
        raise FamilyParamsError(
            f"the family '{name}' is trained by the pipeline '{trained_by}', not '{pipeline}': run "
            f"`kedro run --pipeline {trained_by}`; families of '{pipeline}': {', '.join(family_names(pipeline))}"
        )
    return make()


def resolve(name: str, block: Mapping[str, Any] | None, *defaults: Mapping[str, Any] | None,
            pipeline: str | None = None) -> dict[str, Any]:
    """``{"family": name, **the family's validated parameters}`` (see :func:`resolve_family_params`)."""
    family = get_family(name, pipeline=pipeline)
    params = resolve_family_params(family.name, block, *defaults, extra_blocks=family.extra_blocks,
                                   model_keys=family.model_keys, evaluation_keys=family.evaluation_keys)
    return {"family": family.name, **params}


__all__ = ["Family", "FamilyParamsError", "FamilySetup", "family_defaults", "family_names", "get_family", "resolve",
           "resolve_family_params"]
