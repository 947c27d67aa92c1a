"""Segmentation metrics against values computed by hand."""

import numpy as np
import pytest
import torch

from spectral_training.metrics.segmentation import (
    SegmentationMetrics,
    confusion_matrix,
    mean_iou,
    per_class_iou,
    pixel_accuracy,
)

# reference (row) / prediction, -1 = unlabelled (ignored whatever is predicted there)
TARGET = np.array([[0, 0, 1, 1], [2, 2, 2, -1]])
PRED = np.array([[0, 1, 1, 1], [2, 0, 2, 0]])
# labelled pixels: 7. class 0: TP 1, FN 1 (pred 1), FP 1 (a 2 predicted 0) -> 1/3
# class 1: TP 2, FP 1 -> 2/3 ; class 2: TP 2, FN 1 -> 2/3 ; class 3: absent everywhere -> None


def test_confusion_iou_and_accuracy_match_the_hand_computed_values():
    matrix = confusion_matrix(PRED, TARGET, 4)
    assert matrix.tolist() == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 2, 0], [0, 0, 0, 0]]
    assert per_class_iou(matrix) == pytest.approx([1 / 3, 2 / 3, 2 / 3, None])
    assert mean_iou(matrix) == pytest.approx((1 / 3 + 2 / 3 + 2 / 3) / 3)
    assert pixel_accuracy(matrix) == pytest.approx(5 / 7)


def test_batches_of_logits_accumulate_to_the_same_figures():
    metrics = SegmentationMetrics(4)
    logits = torch.nn.functional.one_hot(torch.as_tensor(PRED), 4).permute(2, 0, 1).float()[None]  # (1, K, H, W)
    metrics.update(logits[..., :1, :], torch.as_tensor(TARGET)[None, :1])
    metrics.update(logits[..., 1:, :], torch.as_tensor(TARGET)[None, 1:])
    assert metrics.compute() == pytest.approx({"miou": 5 / 9, "pixel_accuracy": 5 / 7})


def test_a_class_outside_the_range_is_an_error():
    with pytest.raises(ValueError, match="reference classes"):
        confusion_matrix(np.array([0]), np.array([5]), 3)
