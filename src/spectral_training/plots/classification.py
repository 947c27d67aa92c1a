"""Figures for classification reports: confusion matrix and where the model looks.

Same conventions as :mod:`spectral_training.plots.reconstruction`: plain ``Figure`` objects
(no ``pyplot`` state, Agg on ``savefig``), tensors or arrays accepted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from spectral_training.plots.reconstruction import _np

__all__ = ["plot_attention_maps", "plot_confusion_matrix"]

_MAX_ANNOTATED_CLASSES = 20  # beyond this the numbers no longer fit in the cells
_METHOD_LABELS = {"attention_rollout": "attention rollout", "grad_cam": "Grad-CAM"}
_OVERLAY_ALPHA = 0.5
_MISSING_GREY = 0.5


def plot_confusion_matrix(matrix: Any, class_names: Sequence[str], normalise: bool = True) -> Figure:
    """Confusion matrix as a heat map, rows = true class, columns = predicted class.

    Args:
        matrix: ``(K, K)`` counts (``ClassificationMetrics.compute()["confusion_matrix"]``).
        class_names: ``K`` names for the ticks.
        normalise: colour each cell by its share of the row (recall on the diagonal; an empty
            row stays 0), on a fixed 0-1 scale; else by the raw count.

    Returns:
        Figure with the matrix axis and its colour bar. Counts are written in the cells when
        ``K <= 20``; the true-class ticks carry the row's sample count ``(n=...)``.
    """
    counts = _np(matrix).astype(np.int64)
    k = counts.shape[0]
    if counts.ndim != 2 or counts.shape[1] != k:
        raise ValueError(f"matrix must be square (K, K); got shape {counts.shape}.")
    if len(class_names) != k:
        raise ValueError(f"class_names has {len(class_names)} names for a {k} x {k} matrix.")
    support = counts.sum(axis=1, keepdims=True)  # (K, 1)
    if normalise:
        shown = np.divide(counts, support, out=np.zeros(counts.shape), where=support > 0)
        vmax, label = 1.0, "fraction of the true class"
    else:
        shown = counts.astype(float)
        vmax, label = max(1.0, float(counts.max())), "samples"

    side = float(np.clip(0.35 * k + 2.5, 4.5, 14.0))  # cells stay readable up to ~30 classes
    fig = Figure(figsize=(side + 1.5, side), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(shown, cmap="Blues", vmin=0.0, vmax=vmax, interpolation="nearest")
    fig.colorbar(image, ax=ax, shrink=0.8, label=label)
    font = "small" if k <= 12 else ("x-small" if k <= 30 else "xx-small")
    few = k <= 12  # few classes: 45-degree labels anchored at their end; many: vertical
    ax.set_xticks(
        range(k), [str(c) for c in class_names], rotation=45 if few else 90, ha="right" if few else "center", fontsize=font
    )
    ax.set_yticks(range(k), [f"{c} (n={int(s)})" for c, s in zip(class_names, support[:, 0])], fontsize=font)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if k <= _MAX_ANNOTATED_CLASSES:
        cell_font = max(5.0, 10.0 - 0.25 * k)
        for i in range(k):
            for j in range(k):
                dark = shown[i, j] / vmax > 0.5  # white text on dark cells
                ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=cell_font, color="white" if dark else "black")
    total = int(counts.sum())
    accuracy = np.trace(counts) / total if total else float("nan")
    how = "colours: share of each true class" if normalise else "colours: counts"
    if k <= _MAX_ANNOTATED_CLASSES:
        how += "; cells: counts"
    ax.set_title(f"Confusion matrix: {total} samples, accuracy {accuracy:.3f}\n({how})")
    return fig


def plot_attention_maps(rgb: Any, maps: Any, titles: Sequence[str], method: str) -> Figure:
    """Each sample's RGB composite (top row) and the saliency map over it (bottom row).

    Args:
        rgb: ``(N, 3, H, W)`` in [0, 1] (already stretched; non-finite values are drawn grey).
        maps: ``(N, H, W)`` in [0, 1] (from :func:`spectral_training.models.explain.explain`).
        titles: one per sample, e.g. ``"true: forest / pred: field"``.
        method: ``"attention_rollout"``, ``"grad_cam"`` or any name; shown in the title.

    Returns:
        Figure with ``2 * N`` image axes and one colour bar shared by the overlays.
    """
    images, heat = _np(rgb), _np(maps)
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"rgb must be (N, 3, H, W); got {images.shape}.")
    n, _, h, w = images.shape
    if heat.shape != (n, h, w):
        raise ValueError(f"maps must be (N, H, W) = {(n, h, w)} to match rgb; got {heat.shape}.")
    if len(titles) != n:
        raise ValueError(f"titles has {len(titles)} entries for {n} samples.")
    composite = np.clip(np.nan_to_num(np.moveaxis(images, 1, -1), nan=_MISSING_GREY), 0.0, 1.0)  # (N, H, W, 3)

    fig = Figure(figsize=(2.6 * n + 1.2, 5.8), layout="constrained")
    axes = fig.subplots(2, n, squeeze=False)
    overlay = None
    for i in range(n):
        top, bottom = axes[0, i], axes[1, i]
        top.imshow(composite[i], interpolation="nearest")
        top.set_title(titles[i], fontsize="small")
        bottom.imshow(composite[i], interpolation="nearest")
        overlay = bottom.imshow(heat[i], cmap="jet", alpha=_OVERLAY_ALPHA, vmin=0.0, vmax=1.0, interpolation="bilinear")
        for ax in (top, bottom):
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("RGB composite")
    axes[1, 0].set_ylabel(f"+ {_METHOD_LABELS.get(method, method)}")
    fig.colorbar(overlay, ax=axes[1, :].tolist(), shrink=0.9, label="relevance (per-sample min-max)")
    fig.suptitle(f"Where the model looks: {_METHOD_LABELS.get(method, method)} (overlay alpha {_OVERLAY_ALPHA})")
    return fig
