"""Supervised classifiers by name: timm architectures, our small CNNs and torchvision's ViT.

Engine code (no Kedro). Entry points::

    model = build_classifier("resnet50", num_classes=10, in_chans=13)                  # any size
    model = build_classifier("vit_tiny_patch16_224", 10, 13, image_size=64)            # fixed 64 px
    model = build_classifier("tv_vit_b_16", 10, 13, image_size=64, weights="vit.pth",
                             band_wavelengths_nm=[443, 490, 560, ...])                 # RGB file, 13 bands
    size = model_input_size(model)  # 64 for ViT / Swin / EVA, None for fully convolutional CNNs

Names:

* every ``timm.list_models()`` name (``resnet50``, ``efficientnet_b3``, ``mobilenetv3_large_100``,
  ``convnext_tiny``, ``vit_base_patch16_224``, ``swin_tiny_patch4_window7_224``,
  ``eva02_base_patch14_224``, ...) built with ``pretrained=False`` (nothing is downloaded), plus our
  ``satellite_cnn`` / ``flood_cnn`` (``small_cnns.py``, registered in timm);
* :data:`TORCHVISION_VITS`: ``tv_vit_b_16``, ``tv_vit_b_32``, ``tv_vit_l_16``, ``tv_vit_l_32``,
  ``tv_vit_h_14`` - ``torchvision.models.VisionTransformer`` with the named config (``model_kwargs``
  may override ``patch_size``, ``num_layers``, ``num_heads``, ``hidden_dim``, ``mlp_dim``, ...),
  its patch projection ``conv_proj`` rebuilt for ``in_chans``, and timm's ``group_matcher`` /
  ``no_weight_decay`` added so ``timm.optim.create_optimizer_v2(model, layer_decay=...)`` works.

``image_size`` is passed (as timm's ``img_size``) to models whose timm cfg says
``fixed_input_size`` - ViT, DeiT, Swin, EVA and the like - and to the torchvision ViTs; it must
be a multiple of the patch size (timm would silently drop the border pixels otherwise). Fully
convolutional CNNs take any size and ignore it. The model's ``pretrained_cfg["input_size"]`` is set
to ``(in_chans, size, size)`` so ``timm.data.resolve_data_config({}, model=model)`` tells the truth.

Rebuilding for a checkpoint: calling :func:`build_classifier` again with the same ``name``,
``num_classes``, ``in_chans``, ``image_size``, ``drop_rate``, ``drop_path_rate`` and ``model_kwargs``
and ``weights=None`` gives exactly the same architecture (same state-dict keys and shapes); the
weights-file arguments only set initial values.
"""

from __future__ import annotations

import difflib
import logging
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import timm
import torch
from timm.layers import resample_abs_pos_embed
from timm.models import get_model_input_config, get_pretrained_cfg, is_model, split_model_name_tag
from torch import nn
from torchvision.models import VisionTransformer

import spectral_training.models.small_cnns  # noqa: F401  (registers satellite_cnn / flood_cnn in timm)
from spectral_training.models.input_adaptation import load_weights_file, resolve_adaptation

__all__ = ["TORCHVISION_VITS", "TorchvisionViT", "build_classifier", "model_input_size"]

logger = logging.getLogger("spectral_training.models")

#: our name -> torchvision's ``vit_*`` config (as in ``torchvision.models.vit_b_16`` etc.)
TORCHVISION_VITS: dict[str, dict[str, int]] = {
    "tv_vit_b_16": {"patch_size": 16, "num_layers": 12, "num_heads": 12, "hidden_dim": 768, "mlp_dim": 3072},
    "tv_vit_b_32": {"patch_size": 32, "num_layers": 12, "num_heads": 12, "hidden_dim": 768, "mlp_dim": 3072},
    "tv_vit_l_16": {"patch_size": 16, "num_layers": 24, "num_heads": 16, "hidden_dim": 1024, "mlp_dim": 4096},
    "tv_vit_l_32": {"patch_size": 32, "num_layers": 24, "num_heads": 16, "hidden_dim": 1024, "mlp_dim": 4096},
    "tv_vit_h_14": {"patch_size": 14, "num_layers": 32, "num_heads": 16, "hidden_dim": 1280, "mlp_dim": 5120},
}
_TV_KWARGS = {"patch_size", "num_layers", "num_heads", "hidden_dim", "mlp_dim", "attention_dropout", "representation_size", "norm_layer"}
#: arguments of build_classifier that must not be repeated inside model_kwargs
_RESERVED = {"num_classes", "in_chans", "img_size", "image_size", "pretrained", "drop_rate", "drop_path_rate",
             "pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path", "dropout"}
_NO_DROP_PATH = {"satellite_cnn", "flood_cnn", *TORCHVISION_VITS}


class TorchvisionViT(VisionTransformer):
    """torchvision's ViT with ``in_chans`` input bands and the timm model interface.

    State-dict keys are torchvision's (``conv_proj``, ``class_token``, ``encoder.pos_embedding``,
    ``encoder.layers.encoder_layer_<i>``, ``encoder.ln``, ``heads.head``), so torchvision weight files
    load as they are. ``(B, in_chans, S, S) -> (B, num_classes)`` with ``S = image_size``.
    """

    def __init__(self, in_chans: int, image_size: int, num_classes: int, **vit_kwargs: Any) -> None:
        super().__init__(image_size=image_size, num_classes=num_classes, **vit_kwargs)
        self.in_chans = in_chans
        self.num_features = self.hidden_dim
        p = self.patch_size
        self.conv_proj = nn.Conv2d(in_chans, self.hidden_dim, kernel_size=p, stride=p)  # torchvision's init:
        nn.init.trunc_normal_(self.conv_proj.weight, std=math.sqrt(1 / (in_chans * p * p)))
        nn.init.zeros_(self.conv_proj.bias)
        self.pretrained_cfg = self.default_cfg = {
            "input_size": (in_chans, image_size, image_size),
            "fixed_input_size": True,
            "first_conv": "conv_proj",
            "classifier": "heads.head",
            "num_classes": num_classes,
            "interpolation": "bilinear",
            "crop_pct": 1.0,
        }

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """Layer-decay groups: patch projection / class token / positions = 0, encoder layer i = i + 1
        (the final ``encoder.ln`` joins the last layer), ``heads`` (unmatched) last - timm's ViT convention."""
        return {
            "stem": r"^conv_proj|^class_token|^encoder\.pos_embedding",
            "blocks": [(r"^encoder\.layers\.encoder_layer_(\d+)", None), (r"^encoder\.ln", (99999,))],
        }

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {"class_token", "encoder.pos_embedding"}

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.heads.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new zero-initialised ``heads.head`` of ``num_classes`` logits (torchvision's head init)."""
        if global_pool not in (None, "token"):
            raise ValueError(f"global_pool={global_pool!r}: torchvision's ViT pools the class token only.")
        self.num_classes = num_classes
        old = self.heads.head
        self.heads.head = nn.Linear(old.in_features, num_classes, device=old.weight.device, dtype=old.weight.dtype)
        nn.init.zeros_(self.heads.head.weight)
        nn.init.zeros_(self.heads.head.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, S, S) -> (B, 1 + N, D)`` encoded tokens, class token first."""
        x = self._process_input(x)  # (B, N, D)
        x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1)  # (B, 1 + N, D)
        return self.encoder(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """``(B, 1 + N, D) -> (B, num_classes)``, or the class token ``(B, D)`` when ``pre_logits``."""
        x = x[:, 0]
        return x if pre_logits else self.heads(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """timm-style filter for :class:`TorchvisionViT` files: resample ``encoder.pos_embedding`` to the model's grid."""
    key = "encoder.pos_embedding"
    pos = state_dict.get(key)
    target = model.state_dict().get(key)
    if pos is None or target is None or pos.shape == target.shape or pos.shape[-1] != target.shape[-1]:
        return state_dict
    grid = int(math.isqrt(target.shape[1] - 1))
    logger.info("resampled %s from %d to %d tokens (grid %dx%d)", key, pos.shape[1], target.shape[1], grid, grid)
    return dict(state_dict, **{key: resample_abs_pos_embed(pos, new_size=[grid, grid], num_prefix_tokens=1)})


# --- naming and size checks ----------------------------------------------------------------------
def _unknown_name(name: str) -> ValueError:
    candidates = [*timm.list_models(), *TORCHVISION_VITS]
    close = difflib.get_close_matches(name, candidates, n=6, cutoff=0.6)
    hint = f"close matches: {', '.join(close)}" if close else f"try timm.list_models('*{name[:6]}*')"
    return ValueError(
        f"name={name!r} is neither a timm model nor one of our torchvision names "
        f"({', '.join(TORCHVISION_VITS)}); {hint}."
    )


def _check_patch_multiple(name: str, image_size: int, patch: int) -> None:
    """Patch models need ``image_size % patch == 0``; the error lists the sizes that work."""
    if image_size % patch == 0:
        return
    lower = (image_size // patch) * patch
    fits = [s for s in (lower, lower + patch) if s > 0]
    divisors = [d for d in range(2, min(image_size, 64) + 1) if image_size % d == 0]
    raise ValueError(
        f"image_size={image_size} does not fit {name}: its patch size is {patch}, so the image size must be "
        f"a multiple of {patch} (e.g. {' or '.join(map(str, fits))} px: crop or pad the tiles)"
        + (f", or set model_kwargs patch_size to a divisor of {image_size}: {', '.join(map(str, divisors[:10]))}" if divisors else "")
        + "."
    )


def _check_common(name: str, num_classes: int, in_chans: int, image_size: int | None, model_kwargs: dict) -> None:
    for field, value in (("num_classes", num_classes), ("in_chans", in_chans)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{field}={value!r}: give a positive integer.")
    if image_size is not None and (not isinstance(image_size, int) or image_size < 1):
        raise ValueError(f"image_size={image_size!r}: give a positive integer (pixels per side) or None.")
    clash = sorted(_RESERVED & set(model_kwargs))
    if clash:
        raise ValueError(
            f"model_kwargs for {name} sets {', '.join(clash)}: pass these as build_classifier arguments "
            f"(num_classes, in_chans, image_size, drop_rate, drop_path_rate), not inside model_kwargs."
        )


# --- builders ------------------------------------------------------------------------------------
def _build_torchvision_vit(name: str, num_classes: int, in_chans: int, image_size: int | None,
                           drop_rate: float, model_kwargs: dict) -> TorchvisionViT:
    unknown = sorted(set(model_kwargs) - _TV_KWARGS)
    if unknown:
        raise ValueError(f"model_kwargs for {name}: {', '.join(unknown)} not accepted; use any of {', '.join(sorted(_TV_KWARGS))}.")
    cfg = {**TORCHVISION_VITS[name], **model_kwargs}
    size = 224 if image_size is None else image_size
    _check_patch_multiple(name, size, cfg["patch_size"])
    return TorchvisionViT(in_chans, size, num_classes, dropout=drop_rate, **cfg)


def _build_timm(name: str, num_classes: int, in_chans: int, image_size: int | None,
                drop_rate: float, drop_path_rate: float, model_kwargs: dict) -> nn.Module:
    arch, _ = split_model_name_tag(name)
    if not is_model(arch):
        raise _unknown_name(name)
    cfg = get_pretrained_cfg(name)
    fixed = bool(cfg and cfg.fixed_input_size)
    kwargs: dict[str, Any] = dict(model_kwargs)
    if fixed and image_size is not None:
        found = re.search(r"patch(\d+)", arch)
        patch = model_kwargs.get("patch_size", int(found.group(1)) if found else None)
        if isinstance(patch, int):
            _check_patch_multiple(name, image_size, patch)
        kwargs["img_size"] = image_size
    if drop_path_rate > 0 and arch in _NO_DROP_PATH:
        logger.warning("%s has no stochastic depth: drop_path_rate=%s ignored", name, drop_path_rate)
    elif drop_path_rate > 0:
        kwargs["drop_path_rate"] = drop_path_rate
    size = image_size if image_size is not None else (cfg.input_size[-1] if cfg and cfg.input_size else 224)
    try:
        model = timm.create_model(
            name, pretrained=False, num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate,
            pretrained_cfg_overlay={"input_size": (in_chans, size, size)}, **kwargs,
        )
    except TypeError as err:
        for field, value in (("drop_path_rate", drop_path_rate), ("drop_rate", drop_rate)):
            if f"'{field}'" in str(err):
                raise ValueError(f"{field}={value}: {name} does not take it; set {field}=0.") from err
        raise ValueError(f"model_kwargs for {name} ({sorted(model_kwargs)}): the constructor refused them: {err}") from err
    patch_size = getattr(getattr(model, "patch_embed", None), "patch_size", None)
    if fixed and image_size is not None and isinstance(patch_size, (tuple, list)):
        _check_patch_multiple(name, image_size, int(patch_size[0]))
    min_size = getattr(model, "min_input_size", None)
    if image_size is not None and min_size is not None and image_size < min_size:
        raise ValueError(f"image_size={image_size}: {name} pools down to 1 px below {min_size} px; use tiles of at least {min_size} px.")
    return model


def build_classifier(
    name: str,
    num_classes: int,
    in_chans: int,
    image_size: int | None = None,
    *,
    drop_rate: float = 0.0,
    drop_path_rate: float = 0.0,
    weights: str | Path | None = None,
    weights_adaptation: str = "auto",
    band_wavelengths_nm: Sequence[float] | None = None,
    weights_wavelengths_nm: Sequence[float] | None = None,
    model_kwargs: dict[str, Any] | None = None,
) -> nn.Module:
    """A classifier ``(B, in_chans, H, W) -> (B, num_classes)`` logits, randomly initialised or from a file.

    Args:
        name: a timm model name, ``satellite_cnn`` / ``flood_cnn``, or one of :data:`TORCHVISION_VITS`.
        num_classes: logits of the head.
        in_chans: bands of the input cube.
        image_size: pixels per side for fixed-size models (ViT, Swin, EVA, torchvision ViT); a multiple
            of the patch size. None: the model's default (224 for most). Ignored by CNNs.
        drop_rate: dropout before the classifier (torchvision ViT: its ``dropout``, used in the encoder too).
        drop_path_rate: stochastic depth, passed where the model has it (ignored with a warning otherwise).
        weights: a ``.pt`` / ``.pth`` / ``.bin`` / ``.safetensors`` state dict to start from; its head is
            dropped when the class count differs and its first layer adapted when the band count differs.
        weights_adaptation: ``"auto"`` / ``"timm"`` / ``"wavelength"`` (see ``input_adaptation.py``).
        band_wavelengths_nm: one wavelength (nm) per input band, for the wavelength adaptation.
        weights_wavelengths_nm: nominal wavelength per input channel of the file (default R/G/B 640/550/465).
        model_kwargs: extra constructor arguments (e.g. ``{"depth": 6, "patch_size": 8}``).
    """
    model_kwargs = dict(model_kwargs or {})
    _check_common(name, num_classes, in_chans, image_size, model_kwargs)
    if band_wavelengths_nm is not None and len(band_wavelengths_nm) != in_chans:
        raise ValueError(
            f"band_wavelengths_nm has {len(band_wavelengths_nm)} values but in_chans={in_chans}; give one wavelength (nm) per band."
        )
    if weights is not None:
        resolve_adaptation(weights_adaptation, band_wavelengths_nm)  # fail before building
    if name in TORCHVISION_VITS:
        if drop_path_rate > 0:
            logger.warning("%s has no stochastic depth: drop_path_rate=%s ignored", name, drop_path_rate)
        model = _build_torchvision_vit(name, num_classes, in_chans, image_size, drop_rate, model_kwargs)
    else:
        model = _build_timm(name, num_classes, in_chans, image_size, drop_rate, drop_path_rate, model_kwargs)
    logger.info(
        "built %s: %d in_chans, %d classes, input size %s, %.2f M parameters", name, in_chans, num_classes,
        model_input_size(model) or "any", sum(p.numel() for p in model.parameters()) / 1e6,
    )
    if weights is not None:
        load_weights_file(model, weights, weights_adaptation, band_wavelengths_nm, weights_wavelengths_nm)
    return model


def model_input_size(model: nn.Module) -> int | None:
    """Pixels per side the model requires, or None when it takes any size (fully convolutional).

    Read from timm's view of the model (``timm.models.get_model_input_config``: the ``img_size`` it
    was built with, else its ``pretrained_cfg["input_size"]``), so it works for every timm model, our
    CNNs and :class:`TorchvisionViT`; e.g. 224 for ``eva02_base_patch14_224`` built without
    ``image_size``, 64 for a ViT built with ``image_size=64``, None for ``resnet50``.
    """
    if getattr(model, "pretrained_cfg", None) is None:
        return None
    config = get_model_input_config(model)
    if not config["fixed_input_size"]:
        return None
    return int(config["input_size"][-1])


def model_input_size_by_name(name: str, *, in_chans: int = 3, model_kwargs: dict | None = None) -> int | None:
    """:func:`model_input_size` of the named model as built by default, without allocating weights."""
    with torch.device("meta"):
        model = build_classifier(name, num_classes=2, in_chans=in_chans, model_kwargs=model_kwargs)
    return model_input_size(model)
