"""Class counts and weights for imbalanced classification (pure NumPy functions).

Labels follow the sample index: ``0 .. num_classes - 1`` for labelled samples, ``-1`` for
unlabelled ones. Unlabelled samples are never counted, never weighted and never drawn.

Typical use in a classifier family::

    counts = class_counts(train_labels, num_classes)
    weights = class_weights(counts)               # for torch.nn.CrossEntropyLoss(weight=...)
    sampler = WeightedRandomSampler(sample_weights(train_labels, weights), num_samples=len(train_labels))
"""

from __future__ import annotations

import numpy as np

UNLABELLED = -1


def class_counts(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """int64 ``(num_classes,)``: how many samples carry each label; -1 (unlabelled) is ignored.

    Raises:
        ValueError: ``num_classes`` is not positive, or a label is outside ``-1 .. num_classes - 1``.
    """
    if int(num_classes) < 1:
        raise ValueError(f"class_counts: num_classes must be a positive number of classes, got {num_classes}")
    labels = _check_labels(labels, int(num_classes), "class_counts")
    return np.bincount(labels[labels != UNLABELLED], minlength=int(num_classes)).astype(np.int64)


def class_weights(counts: np.ndarray) -> np.ndarray:
    """float64 inverse-frequency weights ``total / (num_classes * count)``, one per class.

    A class seen exactly as often as in a perfectly balanced set gets 1; rarer classes more,
    commoner ones less. A class with no sample gets 0 (not infinity): it cannot be drawn nor
    contribute to the loss, and a 0 weight keeps losses finite. ``num_classes`` is
    ``len(counts)``, absent classes included, so the weights match the classifier's outputs.

    Raises:
        ValueError: ``counts`` is not 1-D or holds a negative number.
    """
    counts = np.asarray(counts)
    if counts.ndim != 1 or (counts < 0).any():
        raise ValueError(f"class_weights: counts must be a 1-D array of non-negative counts, got {counts!r}")
    total = counts.sum()
    weights = np.zeros(len(counts), dtype=np.float64)
    present = counts > 0
    weights[present] = total / (len(counts) * counts[present].astype(np.float64))
    return weights


def sample_weights(labels: np.ndarray, class_weights: np.ndarray) -> np.ndarray:
    """float64 weight of every sample (its class's weight; 0 for unlabelled) for a
    ``torch.utils.data.WeightedRandomSampler``, which then draws every class equally often.

    Raises:
        ValueError: a label is outside ``-1 .. len(class_weights) - 1``.
    """
    class_weights = np.asarray(class_weights, dtype=np.float64)
    labels = _check_labels(labels, len(class_weights), "sample_weights")
    weights = np.zeros(len(labels), dtype=np.float64)
    labelled = labels != UNLABELLED
    weights[labelled] = class_weights[labels[labelled]]
    return weights


def binary_labels(labels: np.ndarray, positive_class: int) -> np.ndarray:
    """int64 one-vs-rest labels: 1 where ``label == positive_class``, 0 for the other labelled
    samples, -1 stays -1 (unlabelled)."""
    labels = np.asarray(labels).astype(np.int64, copy=False)
    if int(positive_class) < 0:
        raise ValueError(f"binary_labels: positive_class must be a class index >= 0, got {positive_class}")
    out = (labels == int(positive_class)).astype(np.int64)
    out[labels == UNLABELLED] = UNLABELLED
    return out


def _check_labels(labels: np.ndarray, num_classes: int, where: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or (labels.size and labels.dtype.kind not in "iu"):
        raise ValueError(f"{where}: labels must be a 1-D integer array, got shape {labels.shape} dtype {labels.dtype}")
    labels = labels.astype(np.int64, copy=False)
    bad = (labels < UNLABELLED) | (labels >= num_classes)
    if bad.any():
        raise ValueError(
            f"{where}: label(s) {sorted(set(labels[bad].tolist()))[:10]} outside -1 .. {num_classes - 1}"
            f" ({num_classes} classes). Fix: pass the dataset's number of classes (len(class_names))."
        )
    return labels
