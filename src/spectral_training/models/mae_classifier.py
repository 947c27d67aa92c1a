"""A classifier on the encoder of a pretrained spectral MAE (after facebookresearch/mae
``models_vit.py``, ``main_finetune.py`` and ``main_linprobe.py``).

The encoder is the MAE's own: the same 3-D patches (:meth:`MaskedAutoencoderViT.patchify`),
patch embedding, cls token, blocks, final norm and fixed spectral x spatial sin-cos position
code. The decoder is dropped and nothing is masked, every one of the ``L = G * N`` tokens is
encoded::

    x (B, C_in, H, W) -select bands-> (B, C, H, W) -patchify-> (B, L, s*p*p)
      -patch_embed + pos-> (B, L, D) -[cls; tokens], blocks-> (B, 1 + L, D)
      -pool-> (B, D) -norm-> feature (B, D) -head-> logits (B, K)

Pooling: ``"avg"`` (mean of the ``L`` patch tokens, cls left out: the reference's fine-tuning
default) or ``"cls"``. The MAE's final LayerNorm is applied to the pooled vector: it plays the
reference's ``fc_norm`` but starts from the pretrained weights instead of fresh ones. A LayerNorm
acts per token, so with ``"cls"`` the feature is exactly the pretrained encoder's cls output.
Every pretrained encoder weight is used; only the head is new.

Modes:

* ``"full"``: everything trains. :meth:`group_matcher` and :meth:`no_weight_decay` let timm's
  ``create_optimizer_v2(model, "adamw", layer_decay=0.75)`` scale the lr per block: embeddings
  layer 0, block ``i`` layer ``i + 1`` (the norm joins the last block), head on top (scale 1);
* ``"linear_probe"``: no encoder parameter gets a gradient, and the encoder stays in eval mode
  under ``.train()`` (no dropout, no drop-path, nothing changes); the head is
  ``BatchNorm1d(D, affine=False)`` + ``Linear`` as in the reference.

Bands: the model's channels are the checkpoint's bands in the checkpoint's order. For a dataset
with other bands, or the same bands in another order, the classifier holds a band index (one
dataset channel per checkpoint band, -1 for a band the dataset lacks) and selects/reorders the
input itself; a missing band is fed as zeros, i.e. the normalised mean. The caller feeds the
dataset's cube normalised with ``info["band_stats"]``: the checkpoint's statistics already put
in the *dataset's* band order (see :func:`checkpoint_band_stats_for_dataset`).
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from spectral_training.models.band_mapping import (
    check_band_index,
    checkpoint_band_stats_for_dataset,
    resolve_band_index,
)
from spectral_training.models.mae import MaskedAutoencoderViT, build_mae
from spectral_training.models.pos_embed import spectral_spatial_pos_embed

__all__ = [
    "MAEEncoderClassifier",
    "checkpoint_band_stats_for_dataset",
    "interpolate_pos_embed",
    "mae_classifier_from_checkpoint",
]

MODES = ("full", "linear_probe")
POOLS = ("avg", "cls")
DECODER_KEYS = ("decoder", "mask_token")  # state-dict prefixes of the MAE's decoder side
HEAD_KEYS = ("head.", "head_norm.")  # what the classifier adds; the only keys allowed to be missing
# the MAE's token geometry (what MaskedAutoencoderViT.patchify reads, and its figures), copied from the MAE
_GEOMETRY = ("patch_grid", "num_bands", "image_size", "spatial_patch", "spectral_patch", "num_groups", "padded_bands",
             "num_pad_bands", "grid_size", "num_spatial", "num_patches", "patch_dim")


class MAEEncoderClassifier(nn.Module):
    """The encoder of ``mae`` (no masking) with a pooled feature and a linear head.

    Args:
        mae: a built :class:`MaskedAutoencoderViT`; its encoder modules are taken over (shared,
            not copied), its decoder is not kept.
        num_classes: ``K``, width of the logits.
        mode: ``"full"`` or ``"linear_probe"`` (see the module docstring).
        global_pool: ``"avg"`` (mean of the patch tokens) or ``"cls"``.
        drop_rate: dropout on the feature before the linear layer.
        band_index: ``C`` ints, the input channel that feeds each model band, -1 = missing
            (zeros); None = the input already is the model's bands in order.
        num_input_bands: channels of the input when ``band_index`` is given (None: any count
            larger than the highest index).
    """

    # Borrowed from the MAE, so the token layout and the lr groups can never drift from pretraining.
    patchify = MaskedAutoencoderViT.patchify  # (B, C, H, W) -> (B, L, s*p*p)
    group_matcher = MaskedAutoencoderViT.group_matcher  # head, head_norm match nothing: top group

    def __init__(
        self,
        mae: MaskedAutoencoderViT,
        num_classes: int,
        *,
        mode: str = "full",
        global_pool: str = "avg",
        drop_rate: float = 0.0,
        band_index: Sequence[int] | None = None,
        num_input_bands: int | None = None,
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if global_pool not in POOLS:
            raise ValueError(f"global_pool must be one of {POOLS}, got {global_pool!r}")
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes}")
        if not 0.0 <= float(drop_rate) < 1.0:
            raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate}")
        for name in _GEOMETRY:
            setattr(self, name, getattr(mae, name))
        self.mode, self.global_pool = mode, global_pool
        self.embed_dim = D = mae.embed_dim
        self.num_classes = int(num_classes)
        device = mae.cls_token.device

        # --- encoder: the MAE's own modules -------------------------------------------------
        self.patch_embed = mae.patch_embed  # Linear(s*p*p -> D)
        self.cls_token = mae.cls_token  # (1, 1, D)
        self.pos_embed = mae.pos_embed  # (1, 1 + L, D), fixed sin-cos, requires_grad False
        self.blocks = mae.blocks
        self.norm = mae.norm

        # --- head -------------------------------------------------------------------------------
        probe = mode == "linear_probe"
        self.head_norm = nn.BatchNorm1d(D, affine=False, eps=1e-6, device=device) if probe else nn.Identity()
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(D, self.num_classes, device=device)
        nn.init.trunc_normal_(self.head.weight, std=0.01 if probe else 2e-5)  # as the reference
        nn.init.zeros_(self.head.bias)

        # --- input bands --------------------------------------------------------------------------
        self.num_input_bands = self.num_bands if band_index is None else num_input_bands
        self._min_input_bands = self.num_bands
        if band_index is not None:
            band_index = check_band_index(list(band_index), self.num_bands, num_input_bands)
            self._min_input_bands = max(band_index) + 1
            band_index = torch.tensor(band_index, dtype=torch.long, device=device)  # (C,)
        self.register_buffer("band_index", band_index, persistent=False)  # rebuilt from the mapping

        if probe:
            for p in self.encoder_parameters():
                p.requires_grad_(False)
        self.train()

    def encoder_parameters(self) -> list[nn.Parameter]:
        """Every parameter but the head's."""
        return [p for name, p in self.named_parameters() if not name.startswith(HEAD_KEYS)]

    def train(self, mode: bool = True) -> "MAEEncoderClassifier":
        """As ``nn.Module.train``, but a linear probe's encoder always stays in eval mode."""
        super().train(mode)
        if self.mode == "linear_probe":
            for module in (self.patch_embed, self.blocks, self.norm):
                module.train(False)
        return self

    def no_weight_decay(self) -> set[str]:
        """Parameter names kept out of weight decay (timm's optimizer factory reads this)."""
        return {"pos_embed", "cls_token"}

    # ------------------------------------------------------------------------------------------
    # forward
    # ------------------------------------------------------------------------------------------
    def select_bands(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, H, W)`` input bands -> ``(B, C, H, W)`` model bands; zeros where missing."""
        c_in, (h, w) = self.num_input_bands, self.image_size
        wrong_bands = x.dim() == 4 and (x.shape[1] != c_in if c_in is not None else x.shape[1] < self._min_input_bands)
        if x.dim() != 4 or tuple(x.shape[-2:]) != (h, w) or wrong_bands:
            raise ValueError(
                f"classifier input must be (B, {c_in if c_in is not None else 'C_in'}, {h}, {w}) = (batch, "
                f"{'dataset ' if self.band_index is not None else ''}bands, height, width); got {tuple(x.shape)}. "
                f"Another tile size: build with image_size=<size> (a multiple of spatial_patch={self.spatial_patch}); "
                "other bands: pass dataset_band_names (and band_mapping) to mae_classifier_from_checkpoint"
            )
        if self.band_index is None:
            return x
        present = (self.band_index >= 0)[None, :, None, None]  # (1, C, 1, 1)
        picked = x.index_select(1, self.band_index.clamp_min(0))  # (B, C, H, W)
        return torch.where(present, picked, torch.zeros((), dtype=x.dtype, device=x.device))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``x (B, C_in, H, W)`` -> pooled, normalised feature ``(B, D)``."""
        patches = self.patchify(self.select_bands(x))  # (B, L, s*p*p)
        B = patches.shape[0]
        x = self.patch_embed(patches) + self.pos_embed[:, 1:]  # (B, L, D)
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(B, -1, -1)  # (B, 1, D)
        x = torch.cat([cls, x], dim=1)  # (B, 1 + L, D)
        for blk in self.blocks:
            x = blk(x)
        pooled = x[:, 1:].mean(dim=1) if self.global_pool == "avg" else x[:, 0]  # (B, D)
        return self.norm(pooled)  # (B, D)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, D)`` -> logits ``(B, K)``."""
        return self.head(self.head_drop(self.head_norm(features)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x (B, C_in, H, W)``, normalised with ``info["band_stats"]`` -> logits ``(B, K)``."""
        return self.forward_head(self.forward_features(x))


# ----------------------------------------------------------------------------------------------
# position codes
# ----------------------------------------------------------------------------------------------
def interpolate_pos_embed(
    pos_embed: torch.Tensor, num_groups: int, old_grid: tuple[int, int], new_grid: tuple[int, int]
) -> torch.Tensor:
    """Resize a learned table ``(1, 1 + G * N_old, D)`` to ``(1, 1 + G * N_new, D)``.

    Bicubic over the spatial grid of each band group separately (groups are never mixed), the cls
    row kept, as the reference's ``interpolate_pos_embed``. Token order is group-major, as the MAE.
    """
    (oh, ow), (nh, nw), D = old_grid, new_grid, pos_embed.shape[-1]
    if pos_embed.shape[1] != 1 + num_groups * oh * ow:
        raise ValueError(f"pos_embed has {pos_embed.shape[1]} rows, expected 1 + {num_groups} groups x {oh}x{ow} grid")
    cls, tokens = pos_embed[:, :1], pos_embed[:, 1:]  # (1, 1, D), (1, G*N_old, D)
    t = tokens.reshape(num_groups, oh, ow, D).permute(0, 3, 1, 2)  # (G, D, oh, ow)
    t = F.interpolate(t.float(), size=(nh, nw), mode="bicubic", align_corners=False)  # (G, D, nh, nw)
    t = t.permute(0, 2, 3, 1).reshape(1, num_groups * nh * nw, D)  # (1, G*N_new, D)
    return torch.cat([cls, t.to(pos_embed.dtype)], dim=1)


def _pos_embed_for(saved: torch.Tensor, pretrained: MaskedAutoencoderViT, model: MaskedAutoencoderViT) -> tuple[torch.Tensor, str]:
    """The position table for ``model`` from the checkpoint's ``saved`` one, and how it was made."""
    fixed = spectral_spatial_pos_embed(
        pretrained.embed_dim, *pretrained.grid_size, pretrained.num_bands, pretrained.spectral_patch,
        pretrained.wavelengths_nm, cls_token=True, spectral_dim=pretrained.spectral_embed_dim,
    )[None]  # (1, 1 + L_old, D): what our MAE's fixed code is at the pretraining grid
    if saved.shape == fixed.shape and torch.allclose(saved.float(), fixed, atol=1e-5):
        # Our MAE's code is fixed sin-cos, a function of the grid and the bands: for a new grid it
        # is recomputed exactly (the model built for the new image_size holds it), not interpolated.
        return model.pos_embed.detach().clone(), "recomputed"
    if saved.shape == model.pos_embed.shape:
        return saved, "loaded"  # a learned table of the right length
    G = model.num_groups
    old_n = (saved.shape[1] - 1) // G
    old_grid = pretrained.grid_size
    if old_grid[0] * old_grid[1] != old_n:  # the table is not of the recorded grid: try a square one
        side = round(old_n**0.5)
        if side * side != old_n or 1 + G * old_n != saved.shape[1]:
            raise ValueError(f"checkpoint pos_embed {tuple(saved.shape)} fits neither the pretraining grid "
                             f"{pretrained.grid_size} x {G} band groups nor a square grid; cannot interpolate")
        old_grid = (side, side)
    return interpolate_pos_embed(saved, G, old_grid, model.grid_size), f"interpolated {old_grid} -> {model.grid_size}"


# ----------------------------------------------------------------------------------------------
# from a checkpoint
# ----------------------------------------------------------------------------------------------
def mae_classifier_from_checkpoint(
    path: str | os.PathLike[str],
    num_classes: int,
    *,
    image_size: int | Sequence[int] | None = None,
    mode: str = "full",
    global_pool: str = "avg",
    dataset_band_names: list[str] | None = None,
    band_mapping: Mapping[str, str | None] | Sequence[int] | None = None,
    use_ema: bool = False,
    drop_rate: float = 0.0,
    drop_path_rate: float | None = None,
) -> tuple[MAEEncoderClassifier, dict[str, Any]]:
    """Classifier on the encoder of an MAE pretraining checkpoint (``fit``'s ``last.pt``/``best.pt``).

    Args:
        path: a checkpoint file or run directory (then ``last.pt``).
        num_classes: ``K``.
        image_size: tile side (or ``(H, W)``) to classify; default: the pretraining size. Must
            be a multiple of the checkpoint's ``spatial_patch``.
        mode, global_pool, drop_rate: see :class:`MAEEncoderClassifier`.
        dataset_band_names: the dataset's bands, in its order; checked against the checkpoint's.
        band_mapping: ``{checkpoint_band: dataset_band}`` (None = missing; unmentioned bands are
            matched by name) or a list of dataset band indices, one per checkpoint band (-1 =
            missing). Missing bands are fed as zeros, the normalised mean.
        use_ema: take the EMA weights.
        drop_path_rate: stochastic depth for fine-tuning (None: the pretraining value).

    Returns:
        ``(model, info)``; ``info`` keys: ``checkpoint`` (path), ``band_names`` and
        ``wavelengths_nm`` (the checkpoint's: the model's bands), ``input_band_names`` (what
        ``forward`` takes, in order), ``num_input_bands``, ``band_index`` (None or one input
        channel per checkpoint band, -1 missing), ``band_stats`` ({mean, std} **in input
        order**: normalise the input with these), ``checkpoint_band_stats`` (as stored, checkpoint
        order), ``transforms`` (the pretraining transform specs), ``model_kwargs`` (as stored),
        ``image_size``, ``pos_embed`` ("recomputed", "loaded" or "interpolated ..."),
        ``missing_keys`` (head only), ``unexpected_keys`` (decoder only), ``mode``,
        ``global_pool``, ``use_ema``.

    Raises:
        CheckpointError: unreadable file. ValueError: not an MAE checkpoint, no EMA weights,
        image size, bands or weights that do not fit (the message names them and the fix).
    """
    # Imported here: reading the engine's checkpoint format is this module's only use of the
    # engine, and importing it lazily keeps models/ importable without training/.
    from spectral_training.training.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(path, map_location="cpu")  # torch.load(weights_only=True)
    meta = checkpoint.get("metadata") or {}
    model_kwargs = meta.get("model_kwargs")
    if not isinstance(model_kwargs, Mapping) or not {"variant", "num_bands", "image_size"} <= set(model_kwargs):
        raise ValueError(f"{path}: metadata.model_kwargs (the build_mae arguments: variant, num_bands, image_size, "
                         "...) is missing; expected a checkpoint of the MAE pretraining (pretrain_mae)")
    if use_ema:
        if checkpoint.get("ema") is None:
            raise ValueError(f"{path}: use_ema=True but the run was trained without EMA (train.ema: false); "
                             "pass use_ema=False")
        state = dict(checkpoint["ema"]["module"])
    else:
        state = dict(checkpoint["model"])

    # --- the MAE: at the pretraining size (meta, geometry only) and at the classifier's size ---------
    kwargs = dict(model_kwargs)
    variant, num_bands, pre_size = kwargs.pop("variant"), int(kwargs.pop("num_bands")), kwargs.pop("image_size")
    if kwargs.get("value_range") is not None:
        kwargs["value_range"] = tuple(kwargs["value_range"])  # checkpoints store tuples as lists
    pre_size = pre_size if isinstance(pre_size, int) else tuple(pre_size)
    pretrained = build_mae(variant, num_bands, pre_size, **kwargs, device="meta")
    size = pretrained.image_size if image_size is None else (
        (image_size, image_size) if isinstance(image_size, int) else tuple(int(s) for s in image_size))
    p = pretrained.spatial_patch
    for axis, s in zip(("height", "width"), size):
        if s % p:
            fits = " or ".join(str(v) for v in ((s // p) * p, (s // p + 1) * p) if v > 0)
            raise ValueError(f"image_size: {axis} {s} px is not a multiple of the checkpoint's spatial_patch={p} "
                             f"(fixed by pretraining); use {fits} px (crop or pad the tiles)")
    if drop_path_rate is not None:
        kwargs["drop_path_rate"] = float(drop_path_rate)
    mae = build_mae(variant, num_bands, size, **kwargs)

    # --- bands --------------------------------------------------------------------------------
    band_names = meta.get("band_names", checkpoint.get("band_names"))
    band_names = None if band_names is None else [str(b) for b in band_names]
    if band_names is not None and len(band_names) != num_bands:
        raise ValueError(f"{path}: metadata.band_names has {len(band_names)} names but model_kwargs.num_bands="
                         f"{num_bands}; the checkpoint is inconsistent")
    dataset_bands = None if dataset_band_names is None else [str(b) for b in dataset_band_names]
    band_index = resolve_band_index(band_names, dataset_bands, band_mapping, num_bands)
    model = MAEEncoderClassifier(mae, num_classes, mode=mode, global_pool=global_pool, drop_rate=drop_rate,
                                 band_index=band_index,
                                 num_input_bands=None if dataset_bands is None else len(dataset_bands))
    del mae  # the decoder goes with it

    # --- weights: the encoder's, strictly ------------------------------------------------------
    how = "missing"
    if "pos_embed" in state:
        state["pos_embed"], how = _pos_embed_for(state["pos_embed"], pretrained, model)
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as error:  # a shape mismatch
        raise ValueError(f"{path}: the encoder weights do not fit the model metadata.model_kwargs describes: "
                         f"{error}") from error
    missing = [k for k in result.missing_keys if not k.startswith(HEAD_KEYS)]
    unexpected = [k for k in result.unexpected_keys if not k.startswith(DECODER_KEYS)]
    if missing or unexpected:
        raise ValueError(f"{path}: {'ema.module' if use_ema else 'model'} weights do not match the MAE encoder: "
                         f"missing {missing}, unexpected {unexpected} (only head keys may be missing and only "
                         "decoder keys unexpected); is this a spectral MAE checkpoint of this code version?")

    info: dict[str, Any] = {
        "checkpoint": str(path),
        "band_names": band_names,
        "wavelengths_nm": meta.get("wavelengths_nm", checkpoint.get("wavelengths_nm")),
        "input_band_names": dataset_bands if dataset_bands is not None else band_names,
        "num_input_bands": model.num_input_bands,
        "band_index": band_index,
        "checkpoint_band_stats": meta.get("band_stats", checkpoint.get("band_stats")),
        "transforms": meta.get("transforms", checkpoint.get("transforms")),
        "model_kwargs": dict(model_kwargs),
        "image_size": model.image_size,
        "pos_embed": how,
        "missing_keys": list(result.missing_keys),
        "unexpected_keys": list(result.unexpected_keys),
        "mode": mode,
        "global_pool": global_pool,
        "use_ema": use_ema,
    }
    info["band_stats"] = checkpoint_band_stats_for_dataset(info) if info["checkpoint_band_stats"] else None
    return model, info
