"""Fit a weights file to a classifier whose band count or class count differs from the file's.

Entry point :func:`load_weights_file` (called by ``build_classifier(..., weights=path)``):

1. read the file: ``.pt`` / ``.pth`` / ``.bin`` with ``torch.load(weights_only=True)`` (a plain state
   dict, or a dict holding it under ``"model"``, ``"state_dict"`` or ``"model_state"``; a DDP
   ``module.`` prefix is stripped), ``.safetensors`` with safetensors;
2. apply the architecture's own ``checkpoint_filter_fn`` when its module defines one (timm's
   convention: ViT / EVA resample position embeddings and patch kernels to the model's grid, Swin
   resizes its relative-position tables to the shrunk windows);
3. adapt the first layer (``pretrained_cfg["first_conv"]``) when the file's input channels differ
   from the model's, with one of :data:`ADAPTATION_METHODS`:

   * ``"timm"``: ``timm.models.adapt_input_conv`` - file channels repeated cyclically over the bands
     (summed for one band) and scaled by ``file_chans / in_chans``;
   * ``"wavelength"``: band ``b`` takes the file channel whose nominal wavelength is nearest to
     ``band_wavelengths_nm[b]`` (file channels default to R 640 / G 550 / B 465 nm), scaled by
     ``file_chans / in_chans`` so the summed activation keeps its scale;
   * ``"auto"``: ``"wavelength"`` when band wavelengths are known, else ``"timm"``;

4. drop classifier weights (``pretrained_cfg["classifier"]``) whose shape differs (another class
   count): the model keeps its freshly initialised head;
5. ``load_state_dict(strict=False)`` and check the keys as the MAE reference's fine-tuning does:
   only the head may be missing, nothing may be unexpected; anything else raises, naming the keys.

Every adaptation and dropped head is logged on the ``spectral_training.models`` logger.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch
from timm.models import adapt_input_conv
from torch import nn

__all__ = [
    "ADAPTATION_METHODS",
    "DEFAULT_WEIGHTS_WAVELENGTHS_NM",
    "WEIGHTS_SUFFIXES",
    "adapt_input_weight",
    "load_weights_file",
    "read_state_dict",
    "resolve_adaptation",
    "wavelength_channel_map",
]

logger = logging.getLogger("spectral_training.models")

#: nominal wavelengths (nm) of an RGB-trained file's input channels, in channel order R, G, B
DEFAULT_WEIGHTS_WAVELENGTHS_NM: tuple[float, ...] = (640.0, 550.0, 465.0)
ADAPTATION_METHODS: tuple[str, ...] = ("auto", "timm", "wavelength")
WEIGHTS_SUFFIXES: tuple[str, ...] = (".pt", ".pth", ".bin", ".safetensors")
_WRAPPER_KEYS = ("model", "state_dict", "model_state")
_SHOW = 8  # keys shown in an error message before "... (N in all)"


def _show(keys: Sequence[str]) -> str:
    keys = sorted(keys)
    more = f", ... ({len(keys)} in all)" if len(keys) > _SHOW else ""
    return ", ".join(keys[:_SHOW]) + more


# --- channel adaptation ---------------------------------------------------------------------------
def resolve_adaptation(method: str, band_wavelengths_nm: Sequence[float] | None) -> str:
    """``"auto"`` -> ``"wavelength"`` or ``"timm"``; checks the name and the wavelengths it needs."""
    if method not in ADAPTATION_METHODS:
        raise ValueError(f"weights_adaptation={method!r}: choose one of {', '.join(ADAPTATION_METHODS)}.")
    if method == "auto":
        return "wavelength" if band_wavelengths_nm is not None else "timm"
    if method == "wavelength" and band_wavelengths_nm is None:
        raise ValueError(
            "weights_adaptation='wavelength' needs band_wavelengths_nm (one wavelength in nm per input "
            "band, as the store records them); pass them, or use weights_adaptation='timm'."
        )
    return method


def wavelength_channel_map(
    band_wavelengths_nm: Sequence[float], weights_wavelengths_nm: Sequence[float] = DEFAULT_WEIGHTS_WAVELENGTHS_NM
) -> list[int]:
    """For each band, the index of the file channel with the nearest nominal wavelength (ties: lower index).

    ``wavelength_channel_map([660, 560, 490, 842])`` -> ``[0, 1, 2, 0]`` with the default R/G/B.
    """
    if not weights_wavelengths_nm:
        raise ValueError("weights_wavelengths_nm is empty: give one nominal wavelength (nm) per file input channel.")
    return [
        min(range(len(weights_wavelengths_nm)), key=lambda c: (abs(float(wl) - float(weights_wavelengths_nm[c])), c))
        for wl in band_wavelengths_nm
    ]


def adapt_input_weight(
    weight: torch.Tensor,
    in_chans: int,
    method: str,
    band_wavelengths_nm: Sequence[float] | None = None,
    weights_wavelengths_nm: Sequence[float] | None = None,
    layer: str = "first conv",
) -> torch.Tensor:
    """Adapt a first-layer weight ``(O, I, kh, kw)`` to ``(O, in_chans, kh, kw)`` and log it.

    ``method`` is ``"timm"`` or ``"wavelength"`` (resolve ``"auto"`` with :func:`resolve_adaptation`).
    """
    if weight.ndim != 4:
        raise ValueError(
            f"{layer}: input adaptation needs a 4-D conv weight (O, I, kh, kw), the file has shape "
            f"{tuple(weight.shape)}; save the file from a model whose first layer is a Conv2d."
        )
    file_chans = weight.shape[1]
    if file_chans == in_chans:
        return weight
    if method == "timm":
        try:
            out = adapt_input_conv(in_chans, weight, base_chans=file_chans)
        except NotImplementedError as err:  # pragma: no cover - timm only refuses space-to-depth stems
            raise ValueError(f"{layer}: timm cannot adapt this weight format ({err}).") from err
        detail = f"file channels repeated cyclically, scaled by {file_chans}/{in_chans}"
    elif method == "wavelength":
        if band_wavelengths_nm is None or len(band_wavelengths_nm) != in_chans:
            got = "none" if band_wavelengths_nm is None else f"{len(band_wavelengths_nm)} values"
            raise ValueError(
                f"band_wavelengths_nm: the model has {in_chans} input bands but {got} were given; "
                f"give one wavelength (nm) per band, in band order."
            )
        file_wls = list(weights_wavelengths_nm if weights_wavelengths_nm is not None else DEFAULT_WEIGHTS_WAVELENGTHS_NM)
        if len(file_wls) != file_chans:
            raise ValueError(
                f"weights_wavelengths_nm: {layer} in the weights file has {file_chans} input channels but "
                f"{len(file_wls)} wavelengths were given ({file_wls}); give one nominal wavelength per "
                f"file channel, in channel order (the default is R 640 / G 550 / B 465 for RGB files)."
            )
        index = wavelength_channel_map(band_wavelengths_nm, file_wls)
        out = (weight.float()[:, index] * (file_chans / in_chans)).to(weight.dtype)  # (O, in_chans, kh, kw)
        detail = f"band -> file channel {index}, scaled by {file_chans}/{in_chans}"
    else:
        raise ValueError(f"weights_adaptation={method!r}: choose 'timm' or 'wavelength' (resolve 'auto' first).")
    logger.info("adapted input layer %s from %d to %d channels (method %r: %s)", layer, file_chans, in_chans, method, detail)
    return out


# --- reading a file -----------------------------------------------------------------------------------
def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A weights file's state dict (CPU tensors), unwrapped from a checkpoint dict when needed."""
    path = Path(path)
    if path.suffix not in WEIGHTS_SUFFIXES:
        raise ValueError(f"weights={str(path)!r}: unsupported file type {path.suffix!r}; use one of {', '.join(WEIGHTS_SUFFIXES)}.")
    if not path.is_file():
        raise FileNotFoundError(f"weights={str(path)!r}: no such file; give the path of a saved state dict.")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        obj: object = load_file(str(path), device="cpu")
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises UnpicklingError subclasses that vary by version
            raise ValueError(
                f"weights={str(path)!r}: torch.load(weights_only=True) refused the file ({err}); save "
                f"model.state_dict() (plain tensors), not a pickled model object."
            ) from err
    if isinstance(obj, Mapping):
        for key in _WRAPPER_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise ValueError(f"weights={str(path)!r}: expected a state dict (name -> tensor), got {type(obj).__name__}.")
    state = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if len(state) != len(obj):
        others = [k for k in obj if k not in state]
        raise ValueError(
            f"weights={str(path)!r}: entries that are not tensors: {_show(others)}; the state dict "
            f"should sit at the top level or under one of {', '.join(_WRAPPER_KEYS)}."
        )
    if all(k.startswith("module.") for k in state):
        logger.info("weights %s: stripped the DDP prefix 'module.' from %d keys", path.name, len(state))
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


# --- fitting to a model ------------------------------------------------------------------------------
def _names(model: nn.Module, key: str) -> tuple[str, ...]:
    """``pretrained_cfg[key]`` ('first_conv' / 'classifier') as a tuple of module names."""
    value = (getattr(model, "pretrained_cfg", None) or {}).get(key)
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


def _checkpoint_filter(model: nn.Module) -> Callable | None:
    """timm's convention: the module defining the model class may define ``checkpoint_filter_fn(sd, model)``."""
    return getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)


def _under(key: str, modules: Sequence[str]) -> bool:
    return any(key.startswith(m + ".") for m in modules)


def fit_state_dict(
    model: nn.Module,
    state: dict[str, torch.Tensor],
    method: str,
    band_wavelengths_nm: Sequence[float] | None = None,
    weights_wavelengths_nm: Sequence[float] | None = None,
    source: str = "weights file",
) -> dict[str, torch.Tensor]:
    """The file's state dict made loadable: filtered, first layer adapted, mismatched head dropped."""
    filter_fn = _checkpoint_filter(model)
    if filter_fn is not None:
        state = filter_fn(state, model)
    own = model.state_dict()
    first = {f"{m}.weight" for m in _names(model, "first_conv")}
    heads = _names(model, "classifier")
    out: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    bad: list[str] = []
    for key, value in state.items():
        target = own.get(key)
        if target is None or value.shape == target.shape:
            out[key] = value  # unexpected keys are reported by load_weights_file
        elif key in first and value.ndim == 4 and value.shape[0] == target.shape[0] and value.shape[2:] == target.shape[2:]:
            out[key] = adapt_input_weight(value, target.shape[1], method, band_wavelengths_nm, weights_wavelengths_nm, layer=key)
        elif _under(key, heads):
            dropped.append(f"{key} {tuple(value.shape)}->{tuple(target.shape)}")
        else:
            bad.append(f"{key}: file {tuple(value.shape)}, model {tuple(target.shape)}")
    if bad:
        raise ValueError(
            f"{source}: {len(bad)} tensors do not fit the model and are neither its first layer nor its head: "
            f"{'; '.join(bad[:_SHOW])}. Build the architecture the file was saved from (name and model_kwargs)."
        )
    if dropped:
        logger.info("%s: dropped classifier weights of another shape, head re-initialised: %s", source, ", ".join(dropped))
    return out


def load_weights_file(
    model: nn.Module,
    path: str | Path,
    adaptation: str = "auto",
    band_wavelengths_nm: Sequence[float] | None = None,
    weights_wavelengths_nm: Sequence[float] | None = None,
) -> nn.Module:
    """Load ``path`` into ``model`` in place (see the module docstring) and return the model."""
    method = resolve_adaptation(adaptation, band_wavelengths_nm)
    source = f"weights {Path(path).name}"
    state = fit_state_dict(model, read_state_dict(path), method, band_wavelengths_nm, weights_wavelengths_nm, source)
    result = model.load_state_dict(state, strict=False)
    heads = _names(model, "classifier")
    missing = [k for k in result.missing_keys if not _under(k, heads)]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"{source} does not match the model: keys the file lacks: {_show(missing) or 'none'}; keys the "
            f"model lacks: {_show(result.unexpected_keys) or 'none'}. Only the classifier head "
            f"({', '.join(heads) or 'unknown'}) may be missing; build the architecture the file was saved from."
        )
    logger.info(
        "%s loaded into %s (%d tensors%s)", source, type(model).__name__, len(state),
        f"; head left at its initialisation: {_show(result.missing_keys)}" if result.missing_keys else "",
    )
    return model
