"""Building SITS-Former from the family's parameters and the series store.

``model.preset`` picks a row of :data:`SITS_PRESETS` (the sizes); any size given in ``model``
overrides it. ``reference`` is the published set-up (224 px tiles, 16 px patches, 256-wide, 8
layers of 8 heads, 20 dates); ``demo`` is a small one that trains on the demo series in
minutes on 2 CPU cores.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from spectral_training.cubes.store import CubeStore
from spectral_training.families.checkpoint_reference import resolve_checkpoint
from spectral_training.families.params import FamilyParamsError
from spectral_training.models.sits_former import (
    TEMPORAL_ENCODINGS,
    SITSFormer,
    SITSFormerPretrain,
    load_pretrained_encoder,
)
from spectral_training.training.checkpoint import load_checkpoint

log = logging.getLogger(__name__)

SIZE_KEYS = ("image_size", "patch_size", "embed_dim", "num_layers", "num_heads", "mlp_ratio", "dropout",
             "max_seq_len", "band_group_size", "temporal_encoding")
SITS_PRESETS: dict[str, dict[str, Any]] = {
    # The reference's parameters (img_size 224, patch_size 16, embed_dim 256, 8 layers, 8 heads,
    # mlp_ratio 4, dropout 0.1, max_seq_len 20); in_channels and num_classes come from the data.
    "reference": {"image_size": 224, "patch_size": 16, "embed_dim": 256, "num_layers": 8, "num_heads": 8,
                  "mlp_ratio": 4.0, "dropout": 0.1, "max_seq_len": 20, "band_group_size": 4,
                  "temporal_encoding": "day_of_year"},
    # Small enough for the demo series on 2 CPU cores; image_size null = the store's tile size.
    "demo": {"image_size": None, "patch_size": 4, "embed_dim": 64, "num_layers": 2, "num_heads": 4,
             "mlp_ratio": 2.0, "dropout": 0.1, "max_seq_len": None, "band_group_size": 4,
             "temporal_encoding": "day_of_year"},
}
CLASSIFIER_MODEL_KEYS = ("preset", *SIZE_KEYS, "pretrained")
PRETRAIN_MODEL_KEYS = ("preset", *SIZE_KEYS, "mask_ratio")


def require_series_store(store: CubeStore, family: str) -> dict:
    """The store's info; a cube store is an error naming the fix."""
    info = store.info
    if info.get("sample_layout") != "series":
        raise FamilyParamsError(
            f"{family} trains on time series but {store.path} is a '{info.get('sample_layout')}' store: ingest a "
            f"series dataset (e.g. `kedro run --pipeline demo_data` writes sits_demo) and run with "
            f"--params dataset=<series dataset>")
    return info


def encoder_kwargs(model: Mapping[str, Any], info: Mapping[str, Any], family: str, store_path: str = "the store") -> dict:
    """SITSFormer arguments (without num_classes) from the ``model`` block and the store's info."""
    preset = model.get("preset", "demo")
    if preset not in SITS_PRESETS:
        raise FamilyParamsError(f"{family}.model.preset '{preset}' is unknown; choose one of: {', '.join(SITS_PRESETS)}")
    sizes = {**SITS_PRESETS[preset], **{k: v for k, v in model.items() if k in SIZE_KEYS}}
    tile, store_dates = int(info["tile_size"]), int(info["max_seq_len"])
    image_size = int(sizes["image_size"] or tile)
    if image_size != tile:
        raise FamilyParamsError(
            f"{family}.model.image_size is {image_size} but the tiles of {store_path} are {tile} px: "
            f"set {family}.model.image_size to {tile} (or null), or ingest with ingestion.tile_size={image_size}")
    if image_size % int(sizes["patch_size"]):
        fits = [p for p in range(1, image_size + 1) if image_size % p == 0]
        raise FamilyParamsError(f"{family}.model.patch_size {sizes['patch_size']} does not divide the {image_size} px "
                                f"tiles; patch sizes that fit: {fits}")
    max_seq_len = int(sizes["max_seq_len"] or store_dates)
    if max_seq_len < store_dates:
        raise FamilyParamsError(f"{family}.model.max_seq_len {max_seq_len} is shorter than the store's series "
                                f"({store_dates} dates): set it to {store_dates} or more (or null)")
    if sizes["temporal_encoding"] not in TEMPORAL_ENCODINGS:
        raise FamilyParamsError(f"{family}.model.temporal_encoding must be one of {TEMPORAL_ENCODINGS}")
    if int(sizes["embed_dim"]) % int(sizes["num_heads"]):
        raise FamilyParamsError(f"{family}.model.embed_dim {sizes['embed_dim']} is not divisible by num_heads "
                                f"{sizes['num_heads']}")
    return {"img_size": image_size, "patch_size": int(sizes["patch_size"]), "in_channels": int(info["num_bands"]),
            "embed_dim": int(sizes["embed_dim"]), "num_layers": int(sizes["num_layers"]),
            "num_heads": int(sizes["num_heads"]), "mlp_ratio": float(sizes["mlp_ratio"]),
            "dropout": float(sizes["dropout"]), "max_seq_len": max_seq_len,
            "band_group_size": int(sizes["band_group_size"]), "temporal_encoding": sizes["temporal_encoding"]}


def resolve_pretrained(reference: str | Path) -> Path:
    """A sits_pretrain checkpoint from a .pt path, a run folder or a model manifest (versioned or not)."""
    return resolve_checkpoint(reference, where="sits_former.model.pretrained", family="sits_pretrain", optional=True)


def pretrained_encoder_kwargs(path: Path, band_names: list[str]) -> dict:
    """The encoder sizes a pretraining checkpoint was built with; its bands must be the dataset's."""
    meta = load_checkpoint(path)["metadata"]
    if meta.get("family") != "sits_pretrain":
        raise FamilyParamsError(f"{path} is a checkpoint of the family '{meta.get('family')}', not sits_pretrain")
    if list(meta.get("band_names") or []) != list(band_names):
        raise FamilyParamsError(f"the pretraining checkpoint {path} was trained on bands {meta.get('band_names')}, "
                                f"this dataset has {band_names}: fine-tune on a dataset with the same bands")
    kwargs = dict(meta["model_kwargs"])
    kwargs.pop("mask_ratio", None)
    return kwargs


def build_classifier(model_kwargs: Mapping[str, Any]) -> SITSFormer:
    """The classifier; with ``pretrained`` (a checkpoint path) its encoder is loaded (head excepted)."""
    kwargs = dict(model_kwargs)
    pretrained = kwargs.pop("pretrained", None)
    model = SITSFormer(**kwargs)
    if pretrained:
        load_pretrained_encoder(model, load_checkpoint(pretrained)["model"])
        log.info("sits_former: encoder loaded from %s", pretrained)
    return model


def build_pretrain(model_kwargs: Mapping[str, Any]) -> SITSFormerPretrain:
    return SITSFormerPretrain(**dict(model_kwargs))
