"""Training curves for reports (see :mod:`spectral_training.plots.reconstruction` for conventions)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

__all__ = ["plot_loss_curves", "plot_metric_curves"]

_TRAIN_KEYS = ("train_loss", "loss", "train")
_VAL_KEYS = ("val_loss", "valid_loss", "validation_loss", "val")
_LR_KEYS = ("lr", "learning_rate")


def _pick(row: Mapping[str, Any], keys: Sequence[str]) -> float:
    for key in keys:
        value = row.get(key)
        if value is not None:
            try:
                value = float(value)
            except (TypeError, ValueError):
                continue
            if math.isfinite(value):
                return value
    return math.nan


def plot_loss_curves(history: Sequence[Mapping[str, Any]], loss_label: str = "loss") -> Figure:
    """Train and validation loss per epoch, learning rate on a twin axis when recorded.

    Args:
        history: one dict per epoch. Read keys: ``epoch`` (else 1, 2, ...), train loss
            ``train_loss`` | ``loss`` | ``train``, validation loss ``val_loss`` | ``valid_loss`` |
            ``validation_loss`` | ``val``, learning rate ``lr`` | ``learning_rate``. Missing, ``None`` or
            non-finite values are gaps; a series absent from every epoch is not drawn.
        loss_label: y-axis label, e.g. "masked MSE (normalised units)".

    Returns:
        Figure with one axis (two when a learning rate is present) and a figure legend below
        the plot. Markers make a single epoch visible; an empty history gives a figure that says so.
    """
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.add_subplot()
    ax.set_title("Training curves")
    ax.set_xlabel("epoch")
    ax.set_ylabel(loss_label)
    if not history:
        ax.text(0.5, 0.5, "no epochs recorded", ha="center", va="center", transform=ax.transAxes)
        return fig
    epochs = [float(row.get("epoch", i + 1)) for i, row in enumerate(history)]
    train = [_pick(row, _TRAIN_KEYS) for row in history]
    val = [_pick(row, _VAL_KEYS) for row in history]
    lr = [_pick(row, _LR_KEYS) for row in history]

    def present(v: list[float]) -> bool:
        return any(math.isfinite(x) for x in v)

    lines = []
    if present(train):
        lines += ax.plot(epochs, train, marker="o", color="C0", label="train loss")
    if present(val):
        lines += ax.plot(epochs, val, marker="s", color="C1", label="validation loss")
    if present(lr):
        ax_lr = ax.twinx()
        lines += ax_lr.plot(epochs, lr, linestyle=":", marker=".", color="C2", label="learning rate")
        ax_lr.set_ylabel("learning rate")
        positive = [x for x in lr if math.isfinite(x) and x > 0]
        if positive and len(positive) == sum(math.isfinite(x) for x in lr) and max(positive) / min(positive) > 100:
            ax_lr.set_yscale("log")
    if len(set(epochs)) == 1:
        ax.set_xlim(epochs[0] - 1, epochs[0] + 1)
    ax.grid(True, alpha=0.3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if lines:  # below the plot, so no curve (on either axis) hides under it
        fig.legend(handles=lines, loc="outside lower center", ncols=len(lines))
    else:
        ax.text(0.5, 0.5, "no loss values recorded", ha="center", va="center", transform=ax.transAxes)
    return fig


def plot_metric_curves(history: Sequence[Mapping[str, Any]], keys: Sequence[str], title: str = "Validation metrics") -> Figure:
    """One line per metric key per epoch, e.g. ``["val_accuracy", "val_macro_f1"]``.

    Args:
        history: one dict per epoch (``epoch`` read as in :func:`plot_loss_curves`).
        keys: the metrics to draw, on one shared y axis (use metrics of one scale together).
            Missing, ``None`` or non-finite values are gaps; a key absent from every epoch is
            not drawn and is named in a note on the plot.
        title: the axis title.

    Returns:
        Figure with one axis and a figure legend below the plot.
    """
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(title)
    ax.set_xlabel("epoch")
    ax.set_ylabel("value")
    if not history:
        ax.text(0.5, 0.5, "no epochs recorded", ha="center", va="center", transform=ax.transAxes)
        return fig
    epochs = [float(row.get("epoch", i + 1)) for i, row in enumerate(history)]
    markers = "os^dv<>ph*"
    lines, missing = [], []
    for k, key in enumerate(keys):
        values = [_pick(row, (key,)) for row in history]
        if any(math.isfinite(v) for v in values):
            lines += ax.plot(epochs, values, marker=markers[k % len(markers)], color=f"C{k % 10}", label=key)
        else:
            missing.append(key)
    if missing:
        ax.text(0.01, 0.99, "not recorded: " + ", ".join(missing), ha="left", va="top", fontsize="small", transform=ax.transAxes)
    if len(set(epochs)) == 1:
        ax.set_xlim(epochs[0] - 1, epochs[0] + 1)
    ax.grid(True, alpha=0.3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if lines:
        fig.legend(handles=lines, loc="outside lower center", ncols=min(len(lines), 4))
    return fig
