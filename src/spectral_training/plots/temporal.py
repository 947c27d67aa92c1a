"""Figures of temporal prediction: a held-out date next to its predictions, as RGB composites."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from spectral_training.plots.reconstruction import _composite, _np, _stretch_limits

_INVALID_RGB = (1.0, 0.0, 1.0)  # magenta: pixels of the held-out date that were not observed


def plot_temporal_prediction(target: Any, valid: Any, predictions: Mapping[str, Any], rgb_bands: Sequence[int],
                             target_days: Sequence[int], context: Any | None = None,
                             context_days: Sequence[int | None] | None = None,
                             context_valid: Any | None = None) -> Figure:
    """One row per series: [nearest earlier date], the held-out date, then each prediction.

    Args:
        target: (N, C, H, W) the held-out dates, physical units.
        valid: (N, H, W) bool, the observed pixels of the held-out dates (others drawn magenta,
            and left out of the per-panel MSE, as they are of every metric).
        predictions: name -> (N, C, H, W), e.g. model, persistence, linear interpolation.
        rgb_bands: the bands shown as red, green, blue.
        target_days: day of year of each held-out date.
        context / context_days / context_valid: the nearest real date before each held-out date (or
            None), its day of year and its observed pixels (others magenta).

    Every panel of a row uses the same stretch (2-98 % of the held-out date's valid pixels).
    """
    target, valid = _np(target), _np(valid).astype(bool)
    preds = {name: _np(p) for name, p in predictions.items()}
    context = _np(context) if context is not None else None
    context_valid = _np(context_valid).astype(bool) if context_valid is not None else None
    bands = list(rgb_bands)
    n = target.shape[0]
    columns = (["nearest earlier date"] if context is not None else []) + ["held-out date"] + list(preds)
    fig = Figure(figsize=(2.3 * len(columns), 2.4 * n + 0.4))
    axes = fig.subplots(n, len(columns), squeeze=False)
    for i in range(n):
        shown = np.where(valid[i][None], target[i][bands], np.nan)
        lo, hi = _stretch_limits(shown[None])
        panels = []
        if context is not None:
            day = context_days[i] if context_days is not None else None
            seen = context_valid[i] if context_valid is not None else None
            panels.append((context[i], f"earlier: day {day}" if day is not None else "no earlier date", None, seen))
        panels.append((target[i], f"held out: day {int(target_days[i])}", None, valid[i]))
        for name, p in preds.items():
            err = ((p[i] - target[i]) ** 2)[:, valid[i]]
            panels.append((p[i], name.replace("_", " "), float(err.mean()) if err.size else None, None))
        for j, (cube, title, mse, observed) in enumerate(panels):
            image = _composite(cube[bands], lo, hi)
            if observed is not None:  # a stored date: its unobserved pixels in magenta
                image[~observed] = _INVALID_RGB
            ax = axes[i, j]
            ax.imshow(image, interpolation="nearest")
            ax.set_title(title if mse is None else f"{title}\nMSE {mse:.3g}", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle("Held-out date vs predictions (RGB; MSE over observed pixels, all bands, physical units)",
                 fontsize=9)
    fig.tight_layout()
    return fig
