"""Reconstruction losses of the spectral MAE.

``"mae_spectral"`` (:class:`MAESpectralLoss`) is a weighted sum of four terms, all scored on the
**masked tokens only** and never on band padding:

1. ``mse``: mean squared error per scored element (each real pixel-band of a masked token counts
   once, so a half-padded last band group weighs by its real bands only);
2. ``sam``: spectral angle mapper, in radians, between predicted and target spectra per pixel.
   A pixel's spectrum is every real band of every masked band group at that pixel (with one band
   group covering all bands this is the spectrum of the masked patch at the pixel). Pixels with
   no masked band are left out. ``acos`` is clamped to ``[-1 + 1e-6, 1 - 1e-6]`` so its gradient
   stays finite;
3. ``variance``: keeps spectral diversity: ``relu(std_target - std_pred)`` averaged over pixels,
   where ``std`` is the per-pixel standard deviation across the same spectrum as for ``sam``
   (pixels with fewer than 2 scored bands are left out). Zero whenever the prediction is at
   least as diverse as the target;
4. ``range``: keeps outputs in the valid range ``[lo, hi]``: the squared distance outside it,
   ``(relu(pred - hi) + relu(lo - pred)) ** 2``, averaged over scored elements. Zero inside.
   The default ``(-5, 5)`` is five standard deviations of per-band normalised data (and of
   per-patch normalised targets with ``norm_pix_loss``): real values rarely go past it, runaway
   predictions (the ones that overflow in fp16) do.

Default weights: ``mse 1.0, sam 0.1, variance 0.01, range 0.001``. Everything is computed in
float32, even under autocast, so half-precision predictions never overflow in the loss.
The terms are computed in whatever space ``pred`` and ``target`` live in (normalised data, or
per-patch-normalised targets with ``norm_pix_loss``).

Layout
------
The loss takes the MAE prediction viewed as ``(B, G, N, s, q)``: ``G`` band groups, ``N``
spatial patches, ``s`` bands per group (``spectral_patch``) and ``q`` pixels per patch
(``spatial_patch ** 2``). The model's ``(B, L, patch_dim)`` tensors are exactly this, reshaped
(token ``l = g * N + n``, patch vector band-major). ``mask`` is ``(B, G, N)``, 1 = masked (scored),
0 = visible; ``band_valid`` is ``(G, s)`` bool, False on padded bands (None: all real).
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

__all__ = ["DEFAULT_LOSS_WEIGHTS", "DEFAULT_VALUE_RANGE", "LOSSES", "MAESpectralLoss", "mae_spectral_loss"]

DEFAULT_LOSS_WEIGHTS: dict[str, float] = {"mse": 1.0, "sam": 0.1, "variance": 0.01, "range": 0.001}
DEFAULT_VALUE_RANGE: tuple[float, float] = (-5.0, 5.0)

_ACOS_EPS = 1e-6
_STD_EPS = 1e-6


def _check_weights(weights: Mapping[str, float] | None) -> dict[str, float]:
    merged = dict(DEFAULT_LOSS_WEIGHTS)
    if weights is not None:
        unknown = sorted(set(weights) - set(DEFAULT_LOSS_WEIGHTS))
        if unknown:
            raise ValueError(
                f"loss_weights has unknown key(s) {unknown}; expected a subset of {sorted(DEFAULT_LOSS_WEIGHTS)}"
            )
        merged.update({k: float(v) for k, v in weights.items()})
    return merged


def _check_range(value_range: tuple[float, float] | None) -> tuple[float, float]:
    lo, hi = DEFAULT_VALUE_RANGE if value_range is None else (float(value_range[0]), float(value_range[1]))
    if not lo < hi:
        raise ValueError(f"value_range must be (lo, hi) with lo < hi, got {value_range}")
    return lo, hi


def mae_spectral_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    band_valid: torch.Tensor | None = None,
    weights: Mapping[str, float] | None = None,
    value_range: tuple[float, float] | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The ``"mae_spectral"`` loss (see the module docstring for each term).

    Args:
        pred: ``(B, G, N, s, q)`` predictions, any float dtype.
        target: ``(B, G, N, s, q)`` targets.
        mask: ``(B, G, N)``, 1 = masked token (scored), 0 = visible.
        band_valid: ``(G, s)`` bool, False on padded bands; None if no band is padded.
        weights: any of ``mse, sam, variance, range``; missing keys keep their defaults.
        value_range: ``(lo, hi)`` for the range penalty, default ``(-5, 5)``.

    Returns:
        ``(total, parts)``: float32 scalar tensors; ``parts`` has keys ``mse, sam, variance, range``
        (unweighted). If no token is masked every term is 0 (still connected to ``pred``).
    """
    w_ = _check_weights(weights)
    lo, hi = _check_range(value_range)
    if pred.shape != target.shape or pred.dim() != 5:
        raise ValueError(f"pred and target must both be (B, G, N, s, q); got {tuple(pred.shape)} and {tuple(target.shape)}")
    p = pred.float()
    t = target.float().detach()
    q = p.shape[-1]

    # weight of each (token, band): 1 where masked and real, else 0
    w = mask.to(torch.float32)[:, :, :, None]  # (B, G, N, 1)
    if band_valid is not None and not bool(band_valid.all()):
        w = w * band_valid.to(torch.float32)[None, :, None, :]  # (B, G, N, s)
    else:
        w = w.expand(*w.shape[:3], p.shape[3])  # (B, G, N, s)
    n_scored = w.sum()  # scored (token, band) pairs
    wq = w[..., None]  # (B, G, N, s, 1), broadcast over pixels

    # (1) MSE over scored elements
    diff = p - t
    mse = (diff.square().sum(-1) * w).sum() / (n_scored * q).clamp_min(1.0)

    # per-pixel spectra across every scored band: sums over the (G, s) axes -> (B, N, q)
    n_bands = w.sum(dim=(1, 3))[..., None]  # (B, N, 1) scored bands at each pixel
    pw = p * wq
    dot = (pw * t).sum(dim=(1, 3))  # (B, N, q)
    pp = (pw * p).sum(dim=(1, 3))
    tt = (t.square() * wq).sum(dim=(1, 3))

    # (2) spectral angle per pixel that has at least one scored band
    has_spec = (n_bands > 0).to(torch.float32)  # (B, N, 1)
    cos = dot * torch.rsqrt((pp * tt).clamp_min(1e-24))  # clamp first: no inf gradient at 0
    angle = torch.acos(cos.clamp(-1.0 + _ACOS_EPS, 1.0 - _ACOS_EPS))  # (B, N, q)
    sam = (angle * has_spec).sum() / (has_spec.sum() * q).clamp_min(1.0)

    # (3) spectral diversity: per-pixel std across scored bands (population std)
    has_var = (n_bands > 1).to(torch.float32)  # (B, N, 1)
    n_safe = n_bands.clamp_min(1.0)
    mean_p = pw.sum(dim=(1, 3)) / n_safe  # (B, N, q)
    mean_t = (t * wq).sum(dim=(1, 3)) / n_safe
    var_p = (pp / n_safe - mean_p.square()).clamp_min(0.0)
    var_t = (tt / n_safe - mean_t.square()).clamp_min(0.0)
    std_p = (var_p + _STD_EPS).sqrt()
    std_t = (var_t + _STD_EPS).sqrt()
    variance = (torch.relu(std_t - std_p) * has_var).sum() / (has_var.sum() * q).clamp_min(1.0)

    # (4) squared distance outside [lo, hi], over scored elements
    outside = torch.relu(p - hi) + torch.relu(lo - p)
    rng = (outside.square().sum(-1) * w).sum() / (n_scored * q).clamp_min(1.0)

    parts = {"mse": mse, "sam": sam, "variance": variance, "range": rng}
    total = sum(w_[k] * v for k, v in parts.items())
    return total, parts


class MAESpectralLoss(nn.Module):
    """Module form of :func:`mae_spectral_loss`, holding the weights and the value range."""

    def __init__(
        self,
        weights: Mapping[str, float] | None = None,
        value_range: tuple[float, float] | None = None,
    ) -> None:
        super().__init__()
        self.weights = _check_weights(weights)
        self.value_range = _check_range(value_range)

    def forward(
        self,
        pred: torch.Tensor,
        target: torch.Tensor,
        mask: torch.Tensor,
        band_valid: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return mae_spectral_loss(pred, target, mask, band_valid, self.weights, self.value_range)

    def extra_repr(self) -> str:
        return f"weights={self.weights}, value_range={self.value_range}"


#: loss name (as in the parameter files) -> loss class
LOSSES: dict[str, type[nn.Module]] = {"mae_spectral": MAESpectralLoss}
