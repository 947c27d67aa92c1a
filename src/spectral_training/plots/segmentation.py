"""Figures for segmentation reports: reference and predicted masks over an RGB composite.

Same conventions as :mod:`spectral_training.plots.reconstruction`: plain ``Figure`` objects
(no ``pyplot`` state, Agg on ``savefig``), tensors or arrays accepted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from spectral_training.plots.reconstruction import _composite, _np, _stretch_limits

__all__ = ["plot_segmentation_masks"]

_OVERLAY_ALPHA = 0.55


def _class_colours(num_classes: int) -> np.ndarray:
    """(K, 4) RGBA: tab20 for up to 20 classes, then repeated with a lighter shade."""
    from matplotlib import colormaps

    base = colormaps["tab20"](np.linspace(0, 1, 20))
    return np.array([base[i % 20] * (1.0 if i < 20 else 0.7) for i in range(num_classes)])


def plot_segmentation_masks(cubes: Any, reference: Any, predicted: Any, rgb_bands: Sequence[int],
                            class_names: Sequence[str], ignore_index: int = -1) -> Figure:
    """One column per sample: the RGB composite, the reference mask over it, the prediction over it.

    Args:
        cubes: ``(N, C, H, W)`` in physical units (the composite is stretched to the 2-98th
            percentiles of the samples shown).
        reference: ``(N, H, W)`` class indices, ``ignore_index`` = unlabelled (left uncoloured).
        predicted: ``(N, H, W)`` class indices.
        rgb_bands: three band indices shown as red, green, blue.
        class_names: ``K`` names for the legend.
    """
    x, ref, pred = _np(cubes), np.asarray(_np(reference), dtype=np.int64), np.asarray(_np(predicted), dtype=np.int64)
    if x.ndim != 4:
        raise ValueError(f"cubes must be (N, C, H, W); got {x.shape}")
    n, _, h, w = x.shape
    if ref.shape != (n, h, w) or pred.shape != (n, h, w):
        raise ValueError(f"reference and predicted must be (N, H, W) = {(n, h, w)}; got {ref.shape} and {pred.shape}")
    k = len(class_names)
    colours = _class_colours(k)
    cmap = ListedColormap(colours)
    norm = BoundaryNorm(np.arange(-0.5, k + 0.5), k)
    rgb = x[:, list(rgb_bands)]
    lo, hi = _stretch_limits(rgb)

    fig = Figure(figsize=(2.4 * n + 2.4, 7.4), layout="constrained")
    axes = fig.subplots(3, n, squeeze=False)
    for i in range(n):
        composite = _composite(rgb[i], lo, hi)
        accuracy = _agreement(ref[i], pred[i], ignore_index)
        for row, (mask, label) in enumerate(((None, "RGB composite"), (ref[i], "reference"), (pred[i], "prediction"))):
            ax = axes[row, i]
            ax.imshow(composite, interpolation="nearest")
            if mask is not None:
                shown = np.ma.masked_where((mask == ignore_index) | (mask < 0) | (mask >= k), mask)
                ax.imshow(shown, cmap=cmap, norm=norm, alpha=_OVERLAY_ALPHA, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_ylabel(label)
        axes[0, i].set_title(f"sample {i}" + (f"\n{accuracy:.0%} of labelled px right" if accuracy is not None else ""),
                             fontsize="small")
    present = sorted(set(np.unique(ref[(ref >= 0) & (ref < k)])) | set(np.unique(pred[(pred >= 0) & (pred < k)])))
    fig.legend(handles=[Patch(color=colours[c], label=class_names[c]) for c in present], loc="outside right center",
               fontsize="small", title="class")
    fig.suptitle(f"Segmentation: reference vs prediction over the RGB composite (overlay alpha {_OVERLAY_ALPHA}; "
                 f"unlabelled pixels uncoloured)", fontsize="medium")
    return fig


def _agreement(reference: np.ndarray, predicted: np.ndarray, ignore_index: int) -> float | None:
    labelled = reference != ignore_index
    return float((reference[labelled] == predicted[labelled]).mean()) if labelled.any() else None
