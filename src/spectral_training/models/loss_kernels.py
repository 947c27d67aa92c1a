"""CPU kernels (numba) of the ``mae_spectral`` loss: its per-pixel terms and its gradient.

The loss reduces ``pred`` and ``target`` to five band sums per (token, pixel) and takes every
term from them (see :mod:`.losses`). Written with torch ops, the per-pixel part is ~40 passes
over ``(B, N, q)`` tensors and the gradient ~10 more plus two full-size ones, each a trip
through memory. Here each is one loop (SIMD, the GIL released) that reads its inputs once. The
arithmetic is the torch path's, term for term, in float64 per pixel; the angle uses Abramowitz &
Stegun's 4.4.46 polynomial for ``acos`` (absolute error <= 2e-8 rad; it vectorises, where libm's
``acos`` is one call per pixel) for float32 data, and libm's ``acos`` for float64 data.

Two things keep LLVM from vectorising a numba loop, and both are avoided here: a signed index
(numba then handles negative indices, a branch per access: indices are unsigned), and a division
that may raise ZeroDivisionError (``error_model="numpy"``: IEEE results instead).

The torch path stays for CUDA, MPS and ``torch.compile`` (which fuses it itself);
``tests/models/test_losses.py`` checks both against plain autograd.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, uint64

_SIMD_SUMS = {"reassoc", "contract", "nsz", "arcp"}  # no flag assumes finite values
# Abramowitz & Stegun 4.4.46: acos(x) = sqrt(1 - x) * sum(a_i x^i) on [0, 1], |error| <= 2e-8.
_A0, _A1, _A2, _A3, _A4, _A5, _A6, _A7 = (1.5707963050, -0.2145988016, 0.0889789874, -0.0501743046,
                                          0.0308918810, -0.0170881256, 0.0066700901, -0.0012624911)


@njit(inline="always")
def _at_least(x, floor):
    return x if x > floor else floor  # a select: numba's NaN-aware max() keeps loops from vectorising


@njit(inline="always", fastmath=_SIMD_SUMS, error_model="numpy")
def _acos(x, exact):
    if exact:
        return math.acos(x)
    a = abs(x)
    poly = _A0 + a * (_A1 + a * (_A2 + a * (_A3 + a * (_A4 + a * (_A5 + a * (_A6 + a * _A7))))))
    angle = math.sqrt(1.0 - a) * poly
    return angle if x >= 0.0 else math.pi - angle


@njit(inline="always", fastmath=_SIMD_SUMS, error_model="numpy")
def _pixel(p2, t2, d, lp, lt, inv_n, has2, g_var_scale, inv_n_pix, exact_acos, norm_sq_eps, cos_eps, std_eps):
    """One pixel's squared error, angle and variance gap, and its gradient factors (sam_p,
    sam_t, g_var, mean_p), from its band sums: the torch path's arithmetic, branch-free."""
    floor = norm_sq_eps * norm_sq_eps
    cos_max = 1.0 - cos_eps
    product = p2 * t2
    r = (1.0 / math.sqrt(_at_least(product, floor))) * (1.0 if product > floor else 0.0)
    cos = d * r
    cos_sq = cos * cos
    clamped = _at_least(cos if cos < cos_max else cos_max, -cos_max)
    angle = _acos(clamped, exact_acos)
    mean_p, mean_t = lp * inv_n, lt * inv_n
    var_p = (p2 - mean_p * lp) * inv_n
    std_p = math.sqrt(_at_least(var_p, 0.0) + std_eps)
    gap = math.sqrt(_at_least((t2 - mean_t * lt) * inv_n, 0.0) + std_eps) - std_p
    live = 1.0 if cos_sq < cos_max * cos_max else 0.0
    g_sam = live * -inv_n_pix / math.sqrt(_at_least(1.0 - cos_sq, norm_sq_eps))
    rising = (1.0 if gap > 0.0 else 0.0) * (1.0 if var_p > 0.0 else 0.0)
    return (p2 + t2 - 2.0 * d, angle, has2 * _at_least(gap, 0.0),
            -(g_sam * clamped) / _at_least(p2, norm_sq_eps), g_sam * r, rising * g_var_scale / std_p, mean_p)


@njit(inline="always", fastmath=_SIMD_SUMS, error_model="numpy")
def _token(dot, pp, tt, lp, lt, first, count, inv_n, has2, g_var_scale, inv_n_pix, exact_acos, want_grad,
           norm_sq_eps, cos_eps, std_eps, sam_p, sam_t, g_var, mean_p):
    squared_error, angles, gaps = 0.0, 0.0, 0.0
    for i in range(first, first + count):
        e, a, g, sp, st, gv, mp = _pixel(np.float64(pp[i]), np.float64(tt[i]), np.float64(dot[i]),
                                         np.float64(lp[i]), np.float64(lt[i]), inv_n, has2, g_var_scale,
                                         inv_n_pix, exact_acos, norm_sq_eps, cos_eps, std_eps)
        squared_error += e
        angles += a
        gaps += g
        if want_grad:
            sam_p[i], sam_t[i], g_var[i], mean_p[i] = sp, st, gv, mp
    return squared_error, angles, gaps


@njit(nogil=True, fastmath=_SIMD_SUMS, error_model="numpy", cache=True)
def pixel_terms(dot, pp, tt, lp, lt, bands, pixels_per_token, inv_n_pix, inv_n_pix2, exact_acos, want_grad,
                norm_sq_eps, cos_eps, std_eps, sam_p, sam_t, g_var, mean_p):
    """Sums of the squared error, the angles and the variance gaps over the scored pixels, and
    (``want_grad``) the gradient factors of each pixel, from its band sums (all flat, (P,));
    ``bands`` (P / pixels_per_token,) holds the scored bands of each token's pixels (a token
    with none has no term and no gradient: its factors stay as the caller made them, zero)."""
    squared_error, angles, gaps = 0.0, 0.0, 0.0
    count = uint64(pixels_per_token)
    for token in range(uint64(bands.size)):
        nb = np.float64(bands[token])
        if nb <= 0.0:
            continue
        has2 = 1.0 if nb > 1.0 else 0.0
        inv_n = 1.0 / _at_least(nb, 1.0)
        # Each choice gets its own copy of the pixel loop (the flags are constants in each), so
        # that the acos call and the stores left out never stand in a loop LLVM vectorises.
        first, scale = token * count, has2 * -inv_n_pix2 * inv_n
        if want_grad and exact_acos:
            e, a, g = _token(dot, pp, tt, lp, lt, first, count, inv_n, has2, scale, inv_n_pix, True, True,
                             norm_sq_eps, cos_eps, std_eps, sam_p, sam_t, g_var, mean_p)
        elif want_grad:
            e, a, g = _token(dot, pp, tt, lp, lt, first, count, inv_n, has2, scale, inv_n_pix, False, True,
                             norm_sq_eps, cos_eps, std_eps, sam_p, sam_t, g_var, mean_p)
        elif exact_acos:
            e, a, g = _token(dot, pp, tt, lp, lt, first, count, inv_n, has2, scale, inv_n_pix, True, False,
                             norm_sq_eps, cos_eps, std_eps, sam_p, sam_t, g_var, mean_p)
        else:
            e, a, g = _token(dot, pp, tt, lp, lt, first, count, inv_n, has2, scale, inv_n_pix, False, False,
                             norm_sq_eps, cos_eps, std_eps, sam_p, sam_t, g_var, mean_p)
        squared_error += e
        angles += a
        gaps += g
    return squared_error, angles, gaps


@njit(nogil=True, fastmath=_SIMD_SUMS, error_model="numpy", cache=True)
def loss_gradient(p, t, w, v, sam_p, sam_t, g_var, mean_p, k_mse, k_rng, c_sam, c_var, range_active, lo, hi, grad):
    """``grad = w * v * (A p + Bt t + C)`` (minus ``w * v * k_rng * clamp(p)`` when the range term
    is active) for (B, G, N, s, q) ``p, t, grad``, (B, G, N) token weights ``w``, (G, s) band
    weights ``v`` and (B, N, q) factors, with ``A = k_mse + k_rng + c_sam sam_p + c_var g_var``,
    ``Bt = -k_mse + c_sam sam_t``, ``C = -c_var g_var mean_p`` (see ``_MAESpectralLossFn``)."""
    num_b, num_g, num_n, num_s, num_q = p.shape
    for b in range(uint64(num_b)):
        for g in range(uint64(num_g)):
            for n in range(uint64(num_n)):
                for j in range(uint64(num_s)):
                    scale = w[b, g, n] * v[g, j]
                    if scale == 0.0:  # a visible token or a padded band: no gradient
                        for k in range(uint64(num_q)):
                            grad[b, g, n, j, k] = 0.0
                        continue
                    for k in range(uint64(num_q)):
                        gv = g_var[b, n, k]
                        a = k_mse + k_rng + c_sam * sam_p[b, n, k] + c_var * gv
                        bt = -k_mse + c_sam * sam_t[b, n, k]
                        pv = p[b, g, n, j, k]
                        value = a * pv + bt * t[b, g, n, j, k] - c_var * gv * mean_p[b, n, k]
                        if range_active:
                            inside = pv if pv < hi else hi
                            value -= k_rng * (inside if inside > lo else lo)
                        grad[b, g, n, j, k] = scale * value


@njit(nogil=True, fastmath=_SIMD_SUMS, error_model="numpy", cache=True)
def band_sums(p, t, w, dot, pp, tt, lp, lt):
    """Per-pixel spectrum sums of (B, G, N, s, q) ``p`` and ``t`` into (B, N, q) ``dot`` (p.t),
    ``pp`` (|p|^2), ``tt`` (|t|^2), ``lp`` (sum p) and ``lt`` (sum t): over the s bands of a
    token, and with more than one band group over the groups too, each weighted by its token's
    ``w`` (B, G, N) (1 masked, 0 visible). With one group every token is summed as it is (its
    weight is applied per pixel afterwards, as the torch path does)."""
    num_b, num_g, num_n, num_s, num_q = p.shape
    grouped = num_g > 1
    for b in range(uint64(num_b)):
        for n in range(uint64(num_n)):
            for k in range(uint64(num_q)):
                dot[b, n, k] = 0.0
                pp[b, n, k] = 0.0
                tt[b, n, k] = 0.0
                lp[b, n, k] = 0.0
                lt[b, n, k] = 0.0
            for g in range(uint64(num_g)):
                weight = w[b, g, n] if grouped else 1.0
                if weight == 0.0:
                    continue
                for j in range(uint64(num_s)):
                    for k in range(uint64(num_q)):
                        pv, tv = p[b, g, n, j, k], t[b, g, n, j, k]
                        dot[b, n, k] += weight * (pv * tv)
                        pp[b, n, k] += weight * (pv * pv)
                        tt[b, n, k] += weight * (tv * tv)
                        lp[b, n, k] += weight * pv
                        lt[b, n, k] += weight * tv
