"""Node of the transform_validation pipeline."""

from __future__ import annotations

import pandas as pd

from spectral_training.cubes.store import CubeStore
from spectral_training.training.mae_recipe import build_mae_model, prepare_mae
from spectral_training.training.preflight import validate_setup


def validate_mae_transforms(
    cube_store: CubeStore,
    sample_index: pd.DataFrame,
    band_stats: dict,
    model_params: dict,
    transform_params: dict,
    mae_variants: dict,
    validation_params: dict,
) -> dict:
    """Check transforms and model against the store before any training step.

    Returns:
        The transform report: each check with ``passed`` and a ``detail`` that names the
        parameters involved, and ``passed`` overall.
    """
    setup = prepare_mae(cube_store, sample_index, band_stats, model_params, transform_params, mae_variants)
    image_size = setup.model_kwargs["image_size"]
    report = validate_setup(
        setup.train_set,
        setup.val_set,
        setup.train_transform,
        setup.eval_transform,
        tile_size=setup.metadata["tile_size"],
        store_bands=len(setup.metadata["band_names"]),
        model_builder=lambda: build_mae_model(setup.model_kwargs),
        model_image_size=image_size if isinstance(image_size, int) else image_size[0],
        model_bands=setup.model_kwargs["num_bands"],
        band_names=setup.metadata["band_names"],
        batch_size=int(validation_params.get("batch_size", 4)),
        steps=int(validation_params.get("steps", 5)),
        lr=float(validation_params.get("lr", 1e-3)),
        seed=int(validation_params.get("seed", 0)),
    )
    report["model_kwargs"] = setup.model_kwargs
    report["transforms"] = {"train": setup.train_transform.describe(), "eval": setup.eval_transform.describe()}
    return report
