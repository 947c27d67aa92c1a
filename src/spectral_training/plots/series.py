"""Time-series report figures: per-class mean curves and attention over day of year
(matplotlib Figures, no pyplot state; see :mod:`spectral_training.plots.reconstruction`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure


def _class_lines(ax, curves: Mapping[str, Any], class_names: Sequence[str], band: bool) -> None:
    x = np.asarray(curves["bin_centres"])
    for k, name in enumerate(class_names):
        mean = np.asarray(curves["mean"][k], dtype=float)
        if not np.isfinite(mean).any():
            continue
        line, = ax.plot(x, mean, marker="o", markersize=3, linewidth=1.6, label=str(name))
        if band:
            std = np.asarray(curves["std"][k], dtype=float)
            ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.12, linewidth=0)
    ax.set_xlim(1, 366)
    ax.set_xlabel("day of year")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, ncol=2)


def plot_class_curves(curves: Mapping[str, Any], class_names: Sequence[str], value_label: str) -> Figure:
    """Per-class mean (and +-1 std band) of a per-date value, e.g. NDVI, over day of year."""
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.add_subplot()
    _class_lines(ax, curves, class_names, band=True)
    ax.set_ylabel(value_label)
    ax.set_title(f"Per-class mean {value_label} over the year")
    return fig


def plot_date_attention(curves: Mapping[str, Any], class_names: Sequence[str], example: Mapping[str, Any] | None = None) -> Figure:
    """Where in the year the classifier looks: the cls token's attention share per date (last
    layer, mean over heads, summed over a date's patches), averaged per class over day of year;
    ``example`` (``day_of_year``, ``per_layer`` (L, T), ``title``) adds one series' layers."""
    panels = 2 if example else 1
    fig = Figure(figsize=(8, 4.0 * panels), layout="constrained")
    ax = fig.add_subplot(panels, 1, 1)
    _class_lines(ax, curves, class_names, band=False)
    ax.set_ylabel("attention share of a date")
    ax.set_title("SITS-Former attention over dates (last layer), mean per true class")
    if example:
        ax2 = fig.add_subplot(panels, 1, 2)
        doy = np.asarray(example["day_of_year"])
        per_layer = np.asarray(example["per_layer"])
        for layer, row in enumerate(per_layer):
            ax2.plot(doy, row, marker="o", markersize=3, label=f"layer {layer + 1}")
        ax2.set_xlim(1, 366)
        ax2.set_xlabel("day of year")
        ax2.set_ylabel("attention share")
        ax2.set_title(str(example.get("title", "one series")))
        ax2.grid(True, alpha=0.3)
        ax2.legend(fontsize=7, ncol=2)
    return fig
