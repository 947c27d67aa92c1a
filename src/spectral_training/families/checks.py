"""Transform validation for any family: the engine's pre-flight checks on the family's setup."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from spectral_training.cubes.store import CubeStore
from spectral_training.families.base import Family
from spectral_training.training.preflight import validate_setup


def validate_family(
    family: Family,
    store: CubeStore,
    sample_index: pd.DataFrame,
    band_stats: dict,
    params: Mapping[str, Any],
    validation_params: Mapping[str, Any],
) -> dict:
    """The transform report of this family's setup: shapes, finiteness, one batch trains.

    The forward pass is the family's training forward, the one the engine will run, so a model
    whose loss needs labels, masks or mixup is checked exactly as it will be trained.
    """
    setup = family.prepare(store, sample_index, band_stats, dict(params))
    report = validate_setup(
        setup.train_set,
        setup.val_set,
        setup.train_transform,
        setup.eval_transform,
        tile_size=setup.metadata["tile_size"],
        store_bands=len(setup.metadata["band_names"]),
        model_builder=lambda: family.build_model(setup.model_kwargs),
        model_image_size=setup.image_size,
        model_bands=setup.num_bands,
        band_names=setup.metadata["band_names"],
        forward_fn=family.make_forward(setup),
        image_size_param=f"{family.name}.model.image_size",
        batch_size=int(validation_params.get("batch_size", 4)),
        steps=int(validation_params.get("steps", 5)),
        lr=float(validation_params.get("lr", 1e-3)),
        seed=int(validation_params.get("seed", 0)),
    )
    report["family"] = family.name
    report["model_kwargs"] = setup.model_kwargs
    report["transforms"] = {"train": setup.train_transform.describe(), "eval": setup.eval_transform.describe()}
    return report
