"""Per-pixel segmentation scores: confusion matrix, per-class IoU, mean IoU, pixel accuracy.

Pure functions of integer class maps. Pixels whose reference is ``ignore_index`` (unlabelled)
are left out of every figure. A class that appears neither in the reference nor in the
prediction has no IoU (None) and is left out of the mean: a 0/0 says nothing about the model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

IGNORE_INDEX = -1


def confusion_matrix(pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray, num_classes: int,
                     ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """int64 (K, K): row = reference class, column = predicted class, over the labelled pixels."""
    pred = np.asarray(pred.detach().cpu() if isinstance(pred, torch.Tensor) else pred, dtype=np.int64).ravel()
    target = np.asarray(target.detach().cpu() if isinstance(target, torch.Tensor) else target, dtype=np.int64).ravel()
    if pred.shape != target.shape:
        raise ValueError(f"prediction has {pred.size} pixels but the reference {target.size}")
    keep = target != ignore_index
    pred, target = pred[keep], target[keep]
    if target.size and (target.min() < 0 or target.max() >= num_classes):
        raise ValueError(f"reference classes must be in [0, {num_classes}) or {ignore_index}, got "
                         f"{int(target.min())}..{int(target.max())}")
    if pred.size and (pred.min() < 0 or pred.max() >= num_classes):
        raise ValueError(f"predicted classes must be in [0, {num_classes}), got {int(pred.min())}..{int(pred.max())}")
    return np.bincount(target * num_classes + pred, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_iou(confusion: np.ndarray) -> list[float | None]:
    """IoU = TP / (TP + FP + FN) per class; None where the class is in neither map."""
    tp = np.diag(confusion).astype(np.float64)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - tp
    return [float(t / u) if u > 0 else None for t, u in zip(tp, union)]


def mean_iou(confusion: np.ndarray) -> float | None:
    """Mean of the defined per-class IoUs (None when no pixel is labelled)."""
    ious = [v for v in per_class_iou(confusion) if v is not None]
    return float(np.mean(ious)) if ious else None


def pixel_accuracy(confusion: np.ndarray) -> float | None:
    """Correct labelled pixels / labelled pixels (None when no pixel is labelled)."""
    total = confusion.sum()
    return float(np.trace(confusion) / total) if total else None


def segmentation_report(confusion: np.ndarray, class_names: Sequence[str]) -> dict:
    """Every figure of one confusion matrix, per class by name."""
    ious = per_class_iou(confusion)
    support = confusion.sum(axis=1)
    return {
        "pixel_accuracy": pixel_accuracy(confusion),
        "mean_iou": mean_iou(confusion),
        "per_class": {name: {"iou": iou, "support_px": int(n)} for name, iou, n in zip(class_names, ious, support)},
        "confusion_matrix": confusion.tolist(),
        "class_names": list(class_names),
        "labelled_pixels": int(confusion.sum()),
    }


class SegmentationMetrics:
    """Accumulates a confusion matrix over batches of logits (B, K, H, W) or class maps (B, H, W)."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX) -> None:
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.confusion = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        if pred.dim() == target.dim() + 1:
            pred = pred.argmax(dim=1)
        self.confusion += confusion_matrix(pred, target, self.num_classes, self.ignore_index)

    def compute(self) -> dict[str, float]:
        """Flat numbers: ``miou`` and ``pixel_accuracy`` (NaN when nothing was labelled), over every
        DDP rank (each validates its own shard, so the matrices are summed first)."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            device = "cuda" if torch.distributed.get_backend() == "nccl" else "cpu"
            summed = torch.as_tensor(self.confusion, device=device)
            torch.distributed.all_reduce(summed)
            self.confusion = summed.cpu().numpy()
        miou, accuracy = mean_iou(self.confusion), pixel_accuracy(self.confusion)
        return {"miou": float("nan") if miou is None else miou,
                "pixel_accuracy": float("nan") if accuracy is None else accuracy}
