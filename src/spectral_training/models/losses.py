"""Reconstruction losses of the spectral MAE.

``"mae_spectral"`` (:class:`MAESpectralLoss`) is a weighted sum of four terms, all scored on the
**masked tokens only** and never on band padding:

1. ``mse``: mean squared error per scored element (each real pixel-band of a masked token counts
   once, so a half-padded last band group weighs by its real bands only);
2. ``sam``: spectral angle mapper, in radians, between predicted and target spectra per pixel.
   A pixel's spectrum is every real band of every masked band group at that pixel (with one band
   group covering all bands it is the spectrum of the masked patch at the pixel). Pixels with no
   masked band are left out; a pixel where ``|pred| * |target| < 1e-12`` has no defined angle and
   scores pi/2 with no gradient. The cosine is clamped to ``[-1 + 1e-6, 1 - 1e-6]`` so the
   gradient of ``acos`` stays finite;
3. ``variance``: keeps spectral diversity: ``relu(std_target - std_pred)`` averaged over pixels,
   where ``std`` is the per-pixel (population) standard deviation across the same spectrum as
   for ``sam``; pixels with fewer than 2 scored bands are left out. Zero whenever the
   prediction is at least as diverse as the target;
4. ``range``: keeps outputs in the valid range ``[lo, hi]``: the squared distance outside it,
   ``(pred - clamp(pred, lo, hi)) ** 2``, averaged over scored elements. Zero inside. The
   default ``(-5, 5)`` is five standard deviations of per-band normalised data (and of
   per-patch normalised targets with ``norm_pix_loss``): real values rarely go past it, runaway
   predictions (the ones that overflow in half precision) do.

Default weights: ``mse 1.0, sam 0.1, variance 0.01, range 0.001``. The terms are computed in
whatever space ``pred`` and ``target`` live in (normalised data, or per-patch-normalised targets
with ``norm_pix_loss``), always in float32 (float64 inputs stay float64), with autocast off, so
half-precision predictions never overflow in the loss.

Layout
------
The loss takes the MAE prediction viewed as ``(B, G, N, s, q)``: ``G`` band groups, ``N``
spatial patches, ``s`` bands per group (``spectral_patch``) and ``q`` pixels per patch
(``spatial_patch ** 2``). The model's ``(B, L, patch_dim)`` tensors are exactly this, reshaped
(token ``l = g * N + n``, patch vector band-major). ``mask`` is ``(B, G, N)``, 1 = masked (scored),
0 = visible; ``band_valid`` is ``(G, s)`` bool, False on padded bands (None: all real).

Speed
-----
The loss is memory-bound. Written plainly with autograd the four terms made ~60 full-size
temporaries per step and cost about five times the reference's MSE, a visible share of a CPU
training step (at the MAE reference's geometry, ``(32, 1, 196, 3, 256)``: ~40 ms forward +
backward against ~10 ms for a plain masked MSE, down from ~58 ms for the previous one-buffer
version; benchmarks/RESULTS.md, "MAE loss cost"). So it is one :class:`torch.autograd.Function`:
the forward pass reduces ``pred`` and ``target`` to five per-(token, pixel) band sums (``p.t, |p|^2, |t|^2, sum p, sum t``: ``s``
times smaller than the input), accumulated one band at a time with in-place multiply-adds (no
full-size temporary; with one band group the visible tokens are left out by a per-pixel weight
instead of being zeroed), and every term comes from those sums
(the MSE too: ``|p - t|^2 = |p|^2 + |t|^2 - 2 p.t``). The backward pass writes the whole gradient
into one buffer, because every term's gradient is ``A * pred + B * target + C`` with per-pixel
``A, B, C`` (plus ``clamp(pred)`` for the range term when something is out of range; derivation
in ``_MAESpectralLossFn.backward``).

Eager on the CPU (float32 or float64, the usual case of a CPU run), the band sums, the per-pixel
terms and the gradient are three compiled loops instead (:mod:`.loss_kernels`, numba): each
reads its inputs once where the torch ops make ~50 passes, which took the loss from ~40 ms to
~18-23 ms forward + backward at the reference's geometry (a plain masked MSE: ~13 ms). CUDA,
MPS and ``torch.compile`` keep the torch ops (a GPU runs them in a few kernels; a compiler fuses
them). ``tests/models/test_losses.py`` checks both paths' values and gradients against plain
autograd and with ``gradcheck``.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
from torch import nn

from .loss_kernels import band_sums, loss_gradient, pixel_terms

__all__ = ["DEFAULT_LOSS_WEIGHTS", "DEFAULT_VALUE_RANGE", "LOSSES", "LOSS_PARTS", "MAESpectralLoss", "mae_spectral_loss"]

DEFAULT_LOSS_WEIGHTS: dict[str, float] = {"mse": 1.0, "sam": 0.1, "variance": 0.01, "range": 0.001}
DEFAULT_VALUE_RANGE: tuple[float, float] = (-5.0, 5.0)
LOSS_PARTS: tuple[str, ...] = ("mse", "sam", "variance", "range")

_COS_EPS = 1e-6  # |cos| <= 1 - eps before acos
_NORM_SQ_EPS = 1e-12  # a spectrum with squared norm below this has no defined angle
_STD_EPS = 1e-6  # std = sqrt(var + eps)


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


class _MAESpectralLossFn(torch.autograd.Function):
    """Returns ``(5,)``: ``[total, mse, sam, variance, range]``; differentiable in ``pred`` only."""

    @staticmethod
    def forward(ctx, pred, target, mask, band_valid, weights, lo, hi):  # noqa: D401 - autograd API
        dtype = torch.float64 if pred.dtype == torch.float64 else torch.float32
        with torch.autocast(pred.device.type, enabled=False):
            p = pred.detach().to(dtype)
            t = target.detach().to(dtype)
            B, G, N, s, q = p.shape
            w = mask.detach().to(dtype).reshape(B, G, N, 1, 1)  # token weight: 1 masked, 0 visible
            if band_valid is not None:  # zero padded bands once: every band sum below then skips them
                v = band_valid.to(dtype).reshape(1, G, 1, s, 1)
                p, t = p * v, t * v
                bands = band_valid.sum(1).to(dtype).reshape(1, G, 1, 1)  # real bands per group
            else:
                v = None
                bands = torch.full((1, G, 1, 1), float(s), dtype=dtype, device=p.device)
            w4 = w[..., 0]  # (B, G, N, 1)

            if torch.compiler.is_compiling():  # no data-dependent branch (a graph break) in a compiled graph
                range_active = True  # the range term is then always computed: 0 when nothing is outside
            else:
                pmin, pmax = torch.aminmax(p)
                range_active = bool(pmin < lo) or bool(pmax > hi)
            if range_active:
                outside = torch.sub(p, p.clamp(lo, hi))
                if v is not None:
                    outside.mul_(v)  # padding is zero, which may itself lie outside [lo, hi]
                out_sq = outside.square_().sum(dim=(3, 4))  # (B, G, N)
                del outside

            cpu_kernels = _cpu_kernels(p)
            band_sums_of = _band_sums_kernel if cpu_kernels else _band_sums_torch
            DOT, quad, lin = band_sums_of(p, t, w[..., 0, 0])  # (B, N, q), (2, B, N, q), (2, B, N, q)
            NB = (w4 * bands).sum(1)  # (B, N, 1) scored bands at each pixel
            n_el = NB.sum() * q  # scored elements
            inv_n_el = 1.0 / n_el.clamp_min(1.0)

            has = (NB > 0).to(dtype)  # (B, N, 1): the pixel has a scored band
            has2 = (NB > 1).to(dtype)  # ... at least two: a spread to compare
            inv_n_pix = 1.0 / (has.sum() * q).clamp_min(1.0)
            inv_n_pix2 = 1.0 / (has2.sum() * q).clamp_min(1.0)
            want_grad = ctx.needs_input_grad[0]
            terms_of = _pixel_terms_kernel if cpu_kernels else _pixel_terms_torch
            squared_error, angles, gaps, factors = terms_of(DOT, quad, lin, NB, has, has2, inv_n_pix, inv_n_pix2, want_grad)
            mse = squared_error.clamp_min(0.0) * inv_n_el
            sam = angles * inv_n_pix
            variance = gaps * inv_n_pix2
            rng = (out_sq * w4[..., 0]).sum() * inv_n_el if range_active else p.new_zeros(())

            parts = torch.stack([mse, sam, variance, rng])
            wts = torch.tensor([weights[k] for k in LOSS_PARTS], dtype=dtype, device=p.device)
            out = torch.cat([(parts * wts).sum()[None], parts])

        if not want_grad:  # evaluation: no gradient factors
            return out
        sam_p, sam_t, g_var, mean_p = factors
        ctx.save_for_backward(p, t, w, sam_p, sam_t, g_var, mean_p, inv_n_el, wts)
        ctx.cpu_kernels = cpu_kernels
        ctx.has_v = v is not None
        if v is not None:
            ctx.v = v
        ctx.range_active, ctx.lo, ctx.hi = range_active, lo, hi
        ctx.pred_dtype = pred.dtype
        return out

    @staticmethod
    def backward(ctx, grad_out):
        """Gradient w.r.t. ``pred`` in one buffer.

        With ``g_k`` the incoming gradient of output ``k`` (0 = total), term ``k`` is scaled by
        ``c_k = g_0 * weight_k + g_k``. At a scored element (token weight ``w``, real band):

        * mse:      ``2 / n_el * (p - t)``
        * range:    ``2 / n_el * (p - clamp(p, lo, hi))``
        * sam:      ``sam_p * p + sam_t * t`` (per-pixel factors from the forward pass)
        * variance: ``g_var * (p - mean_p)``

        so ``grad = w * (A * p + Bt * t + C) - w * c_range * 2 / n_el * clamp(p)`` with per-pixel
        ``A, Bt, C``; padded bands get 0.
        """
        p, t, w, sam_p, sam_t, g_var, mean_p, inv_n_el, wts = ctx.saved_tensors
        g = grad_out.to(p.dtype)
        c = g[0] * wts + g[1:]  # (4,) effective scale of mse, sam, variance, range
        k_mse, k_rng = 2.0 * c[0] * inv_n_el, 2.0 * c[3] * inv_n_el
        if not ctx.range_active:
            k_rng = k_rng * 0.0  # p - clamp(p) is 0 everywhere
        if ctx.cpu_kernels:
            grad = torch.empty_like(p)
            G, s = p.shape[1], p.shape[3]
            v = ctx.v.reshape(G, s) if ctx.has_v else p.new_ones(G, s)
            loss_gradient(p.numpy(), t.numpy(), w[..., 0, 0].numpy(), v.numpy(), sam_p.numpy(), sam_t.numpy(),
                          g_var.numpy(), mean_p.numpy(), float(k_mse), float(k_rng), float(c[1]), float(c[2]),
                          ctx.range_active, float(ctx.lo), float(ctx.hi), grad.numpy())
            return grad.to(ctx.pred_dtype), None, None, None, None, None, None
        A = k_mse + k_rng + c[1] * sam_p + c[2] * g_var  # (B, N, q)
        Bt = -k_mse + c[1] * sam_t
        C = -c[2] * g_var * mean_p
        # (B, N, q) -> (B, 1, N, 1, q), times token weight (B, G, N, 1, 1) -> (B, G, N, 1, q)
        A, Bt, C = (x[:, None, :, None, :] * w for x in (A, Bt, C))
        grad = torch.addcmul(C, p, A)  # (B, G, N, s, q), the one full-size buffer
        grad.addcmul_(t, Bt)
        if ctx.range_active:  # k_rng stays a tensor: no device sync, nothing for a compiler to break on
            grad.sub_(p.clamp(ctx.lo, ctx.hi).mul_(w).mul_(k_rng))
        if ctx.has_v:
            grad.mul_(ctx.v)
        return grad.to(ctx.pred_dtype), None, None, None, None, None, None


def _cpu_kernels(p: torch.Tensor) -> bool:
    """The numba kernels take an eager float32/float64 CPU computation; torch.compile, CUDA and
    MPS keep the torch path (a compiler fuses it, a GPU runs it in a few kernels)."""
    return (p.device.type == "cpu" and p.dtype in (torch.float32, torch.float64)
            and not torch.compiler.is_compiling())


def _pixel_terms_torch(DOT, quad, lin, NB, has, has2, inv_n_pix, inv_n_pix2, want_grad):
    """Summed squared error, angles and variance gaps over the scored pixels (0-d tensors), and
    the gradient factors ``(sam_p, sam_t, g_var, mean_p)`` of each pixel (B, N, q) when wanted,
    from the band sums (``DOT`` (B, N, q), ``quad`` = (|p|^2, |t|^2) and ``lin`` = (sum p,
    sum t), (2, B, N, q)) and the scored bands ``NB`` (B, N, 1) of each pixel."""
    PP, TT = quad[0], quad[1]
    # squared error per pixel from the band sums: |p - t|^2 = |p|^2 + |t|^2 - 2 p.t, summed only
    # after the subtraction (float32 rounding ~1e-7 * (|p|^2 + |t|^2) per pixel, random in sign)
    squared_error = (torch.add(PP, TT).sub_(DOT, alpha=2.0).sum(-1, keepdim=True) * has).sum()

    prod = PP * TT
    # 1 / (|p| |t|), 0 where the angle is undefined (|p| |t| <= 1e-12): cos = 0 there
    defined = prod > _NORM_SQ_EPS**2
    r = prod.clamp_min_(_NORM_SQ_EPS**2).rsqrt_().mul_(defined)
    cos = DOT * r
    cos_sq = cos.square()
    live = cos_sq < (1.0 - _COS_EPS) ** 2  # acos not clamped: it has a gradient
    angle = torch.acos(cos.clamp_(-1.0 + _COS_EPS, 1.0 - _COS_EPS))  # cos is clamped in place
    angles = (angle.sum(-1, keepdim=True) * has).sum()

    # per-pixel std of p and t together: (2, B, N, q); var = (sum x^2 - mean * sum x) / n
    n = NB.clamp_min(1.0)
    mean = lin / n
    var = torch.addcmul(quad, mean, lin, value=-1.0).div_(n)
    std = var.clamp_min(0.0).add_(_STD_EPS).sqrt_()
    std_p, std_t = std[0], std[1]
    gap = std_t - std_p
    gaps = (gap.clamp_min(0.0).sum(-1, keepdim=True) * has2).sum()
    if not want_grad:
        return squared_error, angles, gaps, None
    # sam: d angle / dp = -has * w / sqrt(1 - cos^2) * (r * t - cos / PP * p), 0 if clamped or undefined
    g_sam = cos_sq.neg_().add_(1.0).clamp_min_(_NORM_SQ_EPS).rsqrt_().mul_(live).mul_(has * -inv_n_pix)  # (B, N, q)
    sam_p = (g_sam * cos).div_(PP.clamp_min(_NORM_SQ_EPS)).neg_()  # coefficient of p
    sam_t = g_sam.mul_(r)  # coefficient of t
    # variance: d/dp relu(std_t - std_p) = -[std_t > std_p] * w * (p - mean_p) / (NB * std_p)
    g_var = std_p.reciprocal().mul_((gap > 0) & (var[0] > 0)).mul_(has2 * -inv_n_pix2 / n)  # std_p >= 1e-3
    return squared_error, angles, gaps, (sam_p, sam_t, g_var, mean[0])


def _band_sums_torch(p: torch.Tensor, t: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The spectrum sums of every pixel, ``(DOT (B, N, q), quad = (|p|^2, |t|^2), lin = (sum p,
    sum t), (2, B, N, q))``, over the s bands of its token and, with G > 1 band groups, over the
    groups weighted by their token's ``w`` (B, G, N); one group is summed as it is (visible tokens
    are left out per pixel afterwards)."""
    B, G, N, s, q = p.shape
    # band sums per (token, pixel), each (B, G, N, q), one band at a time: s multiply-adds
    # on (B, G, N, q) slices touch the data ~3x less than reducing full-size products
    dot = p.new_empty(B, G, N, q)  # p.t
    quad = p.new_empty(2, B, G, N, q)  # |p|^2, |t|^2
    lin = p.new_empty(2, B, G, N, q)  # sum p, sum t
    p0, t0 = p[:, :, :, 0], t[:, :, :, 0]
    torch.mul(p0, t0, out=dot)
    torch.mul(p0, p0, out=quad[0])
    torch.mul(t0, t0, out=quad[1])
    if s == 1:
        lin[0].copy_(p0)
        lin[1].copy_(t0)
    else:
        torch.add(p0, p[:, :, :, 1], out=lin[0])
        torch.add(t0, t[:, :, :, 1], out=lin[1])
    for j in range(1, s):
        pj, tj = p[:, :, :, j], t[:, :, :, j]
        dot.addcmul_(pj, tj)
        quad[0].addcmul_(pj, pj)
        quad[1].addcmul_(tj, tj)
        if j > 1:
            lin[0].add_(pj)
            lin[1].add_(tj)
    if G == 1:  # a pixel's spectrum is its token's
        return dot[:, 0], quad[:, :, 0], lin[:, :, 0]
    w4 = w[..., None]  # (B, G, N, 1)
    for x in (dot, quad, lin):
        x.mul_(w4)  # visible tokens -> 0
    return dot.sum(1), quad.sum(2), lin.sum(2)


def _band_sums_kernel(p: torch.Tensor, t: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """:func:`_band_sums_torch` in one compiled pass (``loss_kernels.band_sums``)."""
    B, G, N, s, q = p.shape
    DOT, quad, lin = p.new_empty(B, N, q), p.new_empty(2, B, N, q), p.new_empty(2, B, N, q)
    band_sums(p.numpy(), t.numpy(), w.numpy(), DOT.numpy(), quad[0].numpy(), quad[1].numpy(),
              lin[0].numpy(), lin[1].numpy())
    return DOT, quad, lin


def _pixel_terms_kernel(DOT, quad, lin, NB, has, has2, inv_n_pix, inv_n_pix2, want_grad):
    """:func:`_pixel_terms_torch` in one compiled pass over the pixels (``loss_kernels``)."""
    B, N, q = DOT.shape
    dot, pp, tt, lp, lt = (x.contiguous().reshape(-1).numpy() for x in (DOT, quad[0], quad[1], lin[0], lin[1]))
    factors = tuple(torch.zeros(B, N, q, dtype=DOT.dtype) for _ in range(4)) if want_grad else None
    outputs = [f.numpy().reshape(-1) for f in factors] if want_grad else [np.empty(1, dtype=dot.dtype)] * 4
    sums = pixel_terms(dot, pp, tt, lp, lt, NB.reshape(-1).contiguous().numpy(), q, float(inv_n_pix),
                       float(inv_n_pix2), DOT.dtype == torch.float64, want_grad, _NORM_SQ_EPS, _COS_EPS, _STD_EPS,
                       *outputs)
    squared_error, angles, gaps = (torch.tensor(v, dtype=DOT.dtype) for v in sums)
    return squared_error, angles, gaps, factors


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
        pred: ``(B, G, N, s, q)`` predictions, any float dtype (differentiable).
        target: ``(B, G, N, s, q)`` targets (no gradient flows to them).
        mask: ``(B, G, N)``, 1 = masked token (scored), 0 = visible.
        band_valid: ``(G, s)`` bool, False on padded bands; None if no band is padded.
        weights: any of ``mse, sam, variance, range``; missing keys keep their defaults.
        value_range: ``(lo, hi)`` for the range penalty, default ``(-5, 5)``.

    Returns:
        ``(total, parts)``: float32 scalar tensors (float64 for float64 input); ``parts`` has keys
        ``mse, sam, variance, range`` (unweighted, each differentiable too). With no masked token
        every term is 0.
    """
    w_ = _check_weights(weights)
    lo, hi = _check_range(value_range)
    if pred.shape != target.shape or pred.dim() != 5:
        raise ValueError(
            f"pred and target must both be (B, G, N, s, q); got {tuple(pred.shape)} and {tuple(target.shape)}"
        )
    if tuple(mask.shape) != tuple(pred.shape[:3]):
        raise ValueError(f"mask must be (B, G, N) = {tuple(pred.shape[:3])}, got {tuple(mask.shape)}")
    if band_valid is not None and tuple(band_valid.shape) != (pred.shape[1], pred.shape[3]):
        raise ValueError(f"band_valid must be (G, s) = {(pred.shape[1], pred.shape[3])}, got {tuple(band_valid.shape)}")
    out = _MAESpectralLossFn.apply(pred, target, mask, band_valid, w_, lo, hi)
    return out[0], dict(zip(LOSS_PARTS, out[1:]))


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
