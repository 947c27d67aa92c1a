"""Classification figures: axes, normalised colours, gaps, and a real PNG render."""

import io
import math

import numpy as np
import pytest
import torch

from spectral_training.plots.classification import plot_attention_maps, plot_confusion_matrix
from spectral_training.plots.curves import plot_metric_curves


def _png(fig, min_bytes=3_000):
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=50)
    assert buf.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(buf.getvalue()) >= min_bytes
    return buf


CM = [[3, 1, 0], [1, 2, 1], [0, 0, 0]]  # the last class has no samples


def test_confusion_matrix_rows_normalised_in_the_image():
    fig = plot_confusion_matrix(CM, ["water", "field", "forest"])
    assert len(fig.axes) == 2  # matrix + colour bar
    ax = fig.axes[0]
    shown = np.asarray(ax.images[0].get_array())
    np.testing.assert_allclose(shown.sum(axis=1), [1.0, 1.0, 0.0])  # an empty row stays 0
    np.testing.assert_allclose(shown[0], [0.75, 0.25, 0.0])
    assert ax.images[0].get_clim() == (0.0, 1.0)
    assert sorted(t.get_text() for t in ax.texts) == sorted(str(v) for row in CM for v in row)  # counts in cells
    assert [t.get_text() for t in ax.get_yticklabels()] == ["water (n=4)", "field (n=4)", "forest (n=0)"]
    _png(fig)


def test_confusion_matrix_counts_mode_and_many_classes():
    raw = plot_confusion_matrix(torch.tensor(CM), ["a", "b", "c"], normalise=False)
    np.testing.assert_array_equal(np.asarray(raw.axes[0].images[0].get_array()), CM)
    k = 30
    big = np.random.default_rng(0).integers(0, 50, size=(k, k))
    fig = plot_confusion_matrix(big, [f"class_{i}" for i in range(k)])
    assert not fig.axes[0].texts  # too many cells to write counts in
    assert len(fig.axes[0].get_xticklabels()) == k
    _png(fig)


def test_confusion_matrix_rejects_mismatched_names():
    with pytest.raises(ValueError, match="class_names has 2 names for a 3 x 3"):
        plot_confusion_matrix(CM, ["a", "b"])


def test_attention_maps_layout_and_png():
    n, h, w = 3, 24, 32
    g = torch.Generator().manual_seed(0)
    rgb = torch.rand(n, 3, h, w, generator=g)
    rgb[0, :, 0, 0] = float("nan")
    maps = torch.rand(n, h, w, generator=g)
    fig = plot_attention_maps(rgb, maps, [f"true: a / pred: b{i}" for i in range(n)], "grad_cam")
    assert len(fig.axes) == 2 * n + 1  # composite + overlay per sample, one shared colour bar
    assert "Grad-CAM" in fig.get_suptitle()
    assert fig.axes[0].get_title() == "true: a / pred: b0"
    assert len(fig.axes[n].images) == 2  # composite under the map
    _png(fig)


def test_attention_maps_shape_mismatch_is_named():
    with pytest.raises(ValueError, match=r"maps must be \(N, H, W\)"):
        plot_attention_maps(torch.rand(2, 3, 8, 8), torch.rand(2, 8, 9), ["a", "b"], "attention_rollout")


def test_metric_curves_lines_and_gaps():
    history = [
        {"epoch": 1, "val_accuracy": 0.5, "val_macro_f1": None},
        {"epoch": 2, "val_accuracy": float("nan"), "val_macro_f1": 0.4},
        {"epoch": 3, "val_accuracy": 0.7, "val_macro_f1": 0.6},
    ]
    fig = plot_metric_curves(history, ["val_accuracy", "val_macro_f1", "val_iou"], "Validation")
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.lines] == ["val_accuracy", "val_macro_f1"]
    acc = ax.lines[0].get_ydata()
    assert acc[0] == 0.5 and math.isnan(acc[1]) and acc[2] == 0.7  # the gap
    assert math.isnan(ax.lines[1].get_ydata()[0])
    assert any("val_iou" in t.get_text() for t in ax.texts)  # never recorded: named, not drawn
    assert ax.get_title() == "Validation"
    _png(fig)
    _png(plot_metric_curves([], ["val_accuracy"], "empty"), min_bytes=1_000)
