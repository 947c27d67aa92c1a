"""Figures for masked-autoencoder reconstruction reports.

Every function returns a :class:`matplotlib.figure.Figure` built without ``pyplot``: nothing is
shown, no global backend is switched, nothing leaks between calls, and ``fig.savefig(...)``
renders with Agg (Kedro's ``matplotlib.MatplotlibWriter`` saves it as is). Inputs may be torch
tensors or numpy arrays, in physical units.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

__all__ = [
    "plot_error_per_band",
    "plot_reconstruction_grid",
    "plot_spectra",
    "rgb_band_indices",
]

_RGB_TARGET_NM = (650.0, 550.0, 450.0)
_MASK_GREY = 0.5


def _np(a: Any) -> np.ndarray:
    """Tensor or array-like -> float64 numpy array (on the CPU, detached)."""
    if hasattr(a, "detach"):
        a = a.detach().cpu()
        if str(a.dtype) == "torch.bool":
            return a.numpy()
        a = a.double().numpy()
    return np.asarray(a)


def rgb_band_indices(
    wavelengths_nm: Sequence[float] | None,
    fallback: tuple[int, int, int] = (0, 1, 2),
    num_bands: int | None = None,
) -> tuple[int, int, int]:
    """Bands to show as red, green, blue.

    With wavelengths: the bands nearest 650, 550 and 450 nm (whatever the sensor; a band far
    from the visible is still the nearest one). Without: ``fallback``, checked against
    ``num_bands`` (``len(wavelengths_nm)`` when wavelengths are given).

    Raises:
        ValueError: a fallback index is negative or ``>= num_bands``, or neither wavelengths nor
            ``num_bands`` are given to check it against.
    """
    if wavelengths_nm is not None and len(wavelengths_nm) > 0:
        wl = np.asarray(wavelengths_nm, dtype=float)
        if num_bands is not None and wl.size != num_bands:
            raise ValueError(f"wavelengths_nm has {wl.size} values but num_bands is {num_bands}.")
        if np.all(np.isfinite(wl)):
            return tuple(int(np.argmin(np.abs(wl - t))) for t in _RGB_TARGET_NM)  # type: ignore[return-value]
        num_bands = wl.size  # unknown wavelengths in the list: fall back, but we know C
    if num_bands is None:
        raise ValueError("rgb_band_indices needs wavelengths_nm or num_bands to check the fallback indices.")
    fb = tuple(int(i) for i in fallback)
    if len(fb) != 3 or any(i < 0 or i >= num_bands for i in fb):
        raise ValueError(
            f"fallback RGB band indices {tuple(fallback)} must be 3 indices in [0, {num_bands - 1}] "
            f"for a cube with {num_bands} bands; set rgb_bands in the evaluation parameters."
        )
    return fb  # type: ignore[return-value]


def _stretch_limits(rgb_stack: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel 2nd and 98th percentiles of ``(N, 3, H, W)``, ignoring non-finite values."""
    lo = np.zeros(3)
    hi = np.ones(3)
    for ch in range(3):
        v = rgb_stack[:, ch]
        v = v[np.isfinite(v)]
        if v.size:
            lo[ch], hi[ch] = np.percentile(v, [2, 98])
            if hi[ch] <= lo[ch]:
                hi[ch] = lo[ch] + (abs(lo[ch]) * 1e-6 or 1e-6)
    return lo, hi


def _composite(cube_rgb: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """``(3, H, W)`` -> ``(H, W, 3)`` in [0, 1] with the given stretch; non-finite -> grey."""
    img = (cube_rgb - lo[:, None, None]) / (hi - lo)[:, None, None]
    img = np.clip(np.nan_to_num(img, nan=_MASK_GREY, posinf=1.0, neginf=0.0), 0.0, 1.0)
    return np.moveaxis(img, 0, -1)


def plot_reconstruction_grid(
    original: Any,
    masked_input: Any,
    reconstruction: Any,
    rgb_indices: tuple[int, int, int],
    n_samples: int = 4,
    masked: Any | None = None,
    wavelengths_nm: Sequence[float] | None = None,
) -> Figure:
    """Rows = samples; columns = original, masked input, reconstruction, as RGB composites.

    Args:
        original, masked_input, reconstruction: ``(B, C, H, W)``.
        rgb_indices: band indices shown as red, green, blue (see :func:`rgb_band_indices`).
        n_samples: at most this many rows (the first samples of the batch).
        masked: optional bool ``(B, C, H, W)``; pixels with any RGB band masked are drawn grey in
            the masked-input column. Without it, non-finite values of ``masked_input`` mark them.
        wavelengths_nm: optional, only to name the bands in the title.

    One 2-98 % percentile stretch per RGB channel, computed on the original samples shown, is
    applied to all three columns so their colours compare.
    """
    orig, inp, rec = _np(original), _np(masked_input), _np(reconstruction)
    if orig.ndim != 4 or inp.shape != orig.shape or rec.shape != orig.shape:
        raise ValueError(
            f"original, masked_input and reconstruction must share one (B, C, H, W) shape; got "
            f"{orig.shape}, {inp.shape}, {rec.shape}."
        )
    rgb = list(rgb_band_indices(None, tuple(rgb_indices), num_bands=orig.shape[1]))
    n = max(1, min(int(n_samples), orig.shape[0]))
    lo, hi = _stretch_limits(orig[:n, rgb])
    if masked is not None:
        hidden = _np(masked).astype(bool)
        hidden = np.broadcast_to(hidden, orig.shape)[:n, rgb].any(axis=1)  # (n, H, W)
    else:
        hidden = ~np.isfinite(inp[:n, rgb]).all(axis=1)

    fig = Figure(figsize=(3 * 3.0, n * 3.0 + 0.9), layout="constrained")
    axes = fig.subplots(n, 3, squeeze=False)
    titles = ("Original", "Masked input (grey = masked)", "Reconstruction")
    for i in range(n):
        shown_in = _composite(inp[i, rgb], lo, hi)
        shown_in[hidden[i]] = _MASK_GREY
        for j, img in enumerate((_composite(orig[i, rgb], lo, hi), shown_in, _composite(rec[i, rgb], lo, hi))):
            ax = axes[i, j]
            ax.imshow(img, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(titles[j])
            if j == 0:
                ax.set_ylabel(f"sample {i}  ({orig.shape[2]} x {orig.shape[3]} px)")
    if wavelengths_nm is not None:
        names = ", ".join(f"{c}: {float(wavelengths_nm[b]):.0f} nm" for c, b in zip("RGB", rgb))
    else:
        names = ", ".join(f"{c}: band {b}" for c, b in zip("RGB", rgb))
    fig.suptitle(f"Masked reconstruction, RGB composite ({names}); 2-98 % stretch of the original")
    return fig


def _x_axis(n: int, wavelengths_nm: Sequence[float] | None) -> tuple[np.ndarray, str]:
    if wavelengths_nm is not None:
        if len(wavelengths_nm) != n:
            raise ValueError(f"wavelengths_nm has {len(wavelengths_nm)} values, expected {n}.")
        return np.asarray(wavelengths_nm, dtype=float), "wavelength (nm)"
    return np.arange(n, dtype=float), "band index"


def _values(v: Sequence[float | None]) -> np.ndarray:
    return np.array([np.nan if x is None else float(x) for x in v], dtype=float)


def plot_error_per_band(
    per_band_mse: Sequence[float | None],
    wavelengths_nm: Sequence[float] | None = None,
    baselines: Mapping[str, Sequence[float | None]] | None = None,
    value_label: str = "MSE on masked values (physical units$^2$)",
) -> Figure:
    """Error per band for the model (solid) and each baseline (dashed), one line each.

    Args:
        per_band_mse: one value per band (``ReconstructionMetrics.compute()["per_band"]["mse"]``);
            ``None`` is drawn as a gap.
        wavelengths_nm: x axis in nm when known, else band index.
        baselines: name -> per-band values of the same metric, measured on the same mask.
        value_label: y-axis label (pass e.g. "PSNR (dB)" to plot another per-band metric).

    The y axis is logarithmic when the positive values span more than two decades.
    """
    model = _values(per_band_mse)
    x, xlabel = _x_axis(model.size, wavelengths_nm)
    order = np.argsort(x, kind="stable")
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.add_subplot()
    series = {"model": model}
    for name, vals in (baselines or {}).items():
        v = _values(vals)
        if v.size != model.size:
            raise ValueError(f"baseline {name!r} has {v.size} values, expected {model.size} (one per band).")
        series[f"baseline: {name}"] = v
    markers = "osd^v<>ph*"
    for k, (name, v) in enumerate(series.items()):
        ax.plot(
            x[order],
            v[order],
            linestyle="-" if k == 0 else "--",
            linewidth=2.0 if k == 0 else 1.4,
            marker=markers[k % len(markers)],
            markersize=4,
            label=name,
        )
    finite = np.concatenate([v[np.isfinite(v) & (v > 0)] for v in series.values()])
    if finite.size and finite.max() / finite.min() > 100:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(value_label)
    ax.set_title("Reconstruction error per band: model vs baselines")
    ax.grid(True, alpha=0.3)
    ax.legend()
    return fig


def plot_spectra(
    original: Any,
    reconstruction: Any,
    pixels: Sequence[Sequence[int]],
    wavelengths_nm: Sequence[float] | None = None,
    value_label: str = "value (physical units)",
) -> Figure:
    """Original (solid) vs reconstructed (dashed) spectra of a few pixels, one colour per pixel.

    Args:
        original, reconstruction: one cube ``(C, H, W)`` or a batch ``(B, C, H, W)``.
        pixels: ``(row, col)`` for a cube, ``(sample, row, col)`` for a batch.
        wavelengths_nm: x axis in nm when known, else band index.
        value_label: y-axis label.
    """
    orig, rec = _np(original), _np(reconstruction)
    if orig.shape != rec.shape or orig.ndim not in (3, 4):
        raise ValueError(f"original and reconstruction must share a (C, H, W) or (B, C, H, W) shape; got {orig.shape}, {rec.shape}.")
    if orig.ndim == 3:
        orig, rec = orig[None], rec[None]
    if len(pixels) == 0:
        raise ValueError("pixels is empty: give at least one (row, col) or (sample, row, col).")
    x, xlabel = _x_axis(orig.shape[1], wavelengths_nm)
    order = np.argsort(x, kind="stable")
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.add_subplot()
    colours = [f"C{i % 10}" for i in range(len(pixels))]
    handles = []
    for colour, px in zip(colours, pixels):
        idx = tuple(int(v) for v in px)
        if len(idx) == 2:
            idx = (0, *idx)
        if len(idx) != 3:
            raise ValueError(f"pixel {tuple(px)} must be (row, col) or (sample, row, col).")
        s, r, c = idx
        ax.plot(x[order], orig[s, :, r, c][order], color=colour, linestyle="-", marker=".")
        ax.plot(x[order], rec[s, :, r, c][order], color=colour, linestyle="--", marker=".")
        label = f"pixel (row {r}, col {c})" if orig.shape[0] == 1 else f"sample {s}, pixel (row {r}, col {c})"
        handles.append(Line2D([], [], color=colour, linewidth=3, label=label))
    handles += [
        Line2D([], [], color="black", linestyle="-", label="original"),
        Line2D([], [], color="black", linestyle="--", label="reconstruction"),
    ]
    ax.legend(handles=handles, fontsize="small")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(value_label)
    ax.set_title("Spectra: original (solid) vs reconstruction (dashed)")
    ax.grid(True, alpha=0.3)
    return fig
