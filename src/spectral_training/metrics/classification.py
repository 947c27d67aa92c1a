"""Streaming classification metrics, all derived from one confusion matrix.

The only state is a ``K x K`` confusion matrix (rows = true class, columns = predicted), held by
torchmetrics' ``MulticlassConfusionMatrix``: its state is summed over processes when
``compute()`` runs under ``torch.distributed`` (every rank must call ``compute()``), and nothing
is synchronised when no process group is initialised. Every number below is then computed from
that one matrix, so all of them agree with each other on every rank.

Conventions (those of torchmetrics with ``zero_division=0`` and of scikit-learn):

``accuracy``           correct / samples (micro).
``per_class``          precision ``TP / (TP + FP)``, recall ``TP / (TP + FN)``, F1
                       ``2 TP / (2 TP + FP + FN)``, support ``TP + FN``. A zero denominator gives
                       0.0 (torchmetrics' ``zero_division=0``), e.g. precision of a class never
                       predicted. A class absent from both target and prediction therefore reads
                       0.0 everywhere with support 0: its F1 is really undefined.
``macro_f1``           mean F1 over the classes present in the target OR the prediction
                       (``TP + FP + FN > 0``), exactly torchmetrics' ``average="macro"``: absent
                       classes are left out instead of counting as 0.
``balanced_accuracy``  mean recall over the classes present in the target (support > 0), as
                       scikit-learn's ``balanced_accuracy_score``.
``binary``             (``num_classes == 2`` only) precision, recall, F1 and IoU
                       ``TP / (TP + FP + FN)`` of the positive class, index 1; 0.0 when undefined.

With no samples the summary numbers are ``None`` (strict JSON, like the reconstruction metrics).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor
from torchmetrics.classification import MulticlassConfusionMatrix

__all__ = ["ClassificationMetrics", "metrics_from_confusion", "scalar_summary"]


class ClassificationMetrics:
    """Accumulate predictions batch by batch; ``compute()`` returns plain Python values.

    Args:
        num_classes: ``K`` (at least 2).
        class_names: optional ``K`` names used as ``per_class`` keys (default ``"0"``, ``"1"``, ...).

    ``update(logits (B, K), target (B,))``: the predicted class is ``logits.argmax(1)``; samples
    with ``target < 0`` (unlabelled, ignore index) are skipped.
    """

    def __init__(self, num_classes: int, class_names: list[str] | None = None) -> None:
        if num_classes < 2:
            raise ValueError(f"ClassificationMetrics needs num_classes >= 2; got {num_classes}.")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"class_names has {len(class_names)} names but num_classes is {num_classes}.")
        self.num_classes = int(num_classes)
        self.class_names = [str(c) for c in class_names] if class_names is not None else [str(i) for i in range(num_classes)]
        self._confusion = MulticlassConfusionMatrix(self.num_classes, validate_args=False)

    def update(self, logits: Tensor, target: Tensor) -> None:
        """Add one batch: ``logits (B, K)`` float, ``target (B,)`` int class indices (< 0 ignored)."""
        if logits.ndim != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(f"logits must be (B, {self.num_classes}); got {tuple(logits.shape)}.")
        target = target.reshape(-1)
        if target.shape[0] != logits.shape[0]:
            raise ValueError(f"target has {target.shape[0]} labels for {logits.shape[0]} logits rows.")
        keep = target >= 0
        if bool((target[keep] >= self.num_classes).any()):
            raise ValueError(
                f"target holds class {int(target.max())} but num_classes is {self.num_classes}: "
                "check the label mapping or the family's num_classes."
            )
        if self._confusion.confmat.device != logits.device:  # follow the batches (NCCL syncs CUDA tensors)
            self._confusion = self._confusion.to(logits.device)
        preds = logits.detach()[keep].argmax(dim=1)  # (B',)
        self._confusion.update(preds, target[keep].long())

    def confusion(self) -> Tensor:
        """``(K, K)`` int64 counts, rows = true class, summed over all processes when distributed."""
        with warnings.catch_warnings():  # torchmetrics warns when compute() precedes update(); zeros are right
            warnings.filterwarnings("ignore", message=".*compute.*before the ``update``.*")
            return self._confusion.compute().detach().cpu().long()

    def compute(self) -> dict[str, Any]:
        """``accuracy``, ``macro_f1``, ``balanced_accuracy``, ``per_class``, ``confusion_matrix``,
        ``num_samples`` and, for two classes, ``binary`` (see the module docstring)."""
        return metrics_from_confusion(self.confusion(), self.class_names)

    def reset(self) -> None:
        self._confusion.reset()


def _div(num: Tensor, den: Tensor) -> Tensor:
    """``num / den`` with 0.0 where ``den == 0`` (torchmetrics' ``zero_division=0``)."""
    return torch.where(den > 0, num / den.clamp_min(1), torch.zeros_like(num))


def metrics_from_confusion(confusion: Tensor, class_names: list[str] | None = None) -> dict[str, Any]:
    """All the metrics of :class:`ClassificationMetrics` from a ``(K, K)`` count matrix (rows = true)."""
    cm = torch.as_tensor(confusion).double()
    k = cm.shape[0]
    names = class_names if class_names is not None else [str(i) for i in range(k)]
    tp = cm.diagonal()
    support = cm.sum(dim=1)  # TP + FN
    predicted = cm.sum(dim=0)  # TP + FP
    precision, recall = _div(tp, predicted), _div(tp, support)
    f1 = _div(2 * tp, support + predicted)  # 2TP / (2TP + FP + FN)
    total = float(cm.sum())
    seen = (support + predicted) > 0  # in target or prediction
    labelled = support > 0
    result: dict[str, Any] = {
        "accuracy": float(tp.sum() / total) if total else None,
        "macro_f1": float(f1[seen].mean()) if seen.any() else None,
        "balanced_accuracy": float(recall[labelled].mean()) if labelled.any() else None,
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(names, precision, recall, f1, support)
        },
        "confusion_matrix": cm.long().tolist(),
        "num_samples": int(total),
    }
    if k == 2:
        tp1, fp1, fn1 = tp[1], cm[0, 1], cm[1, 0]
        result["binary"] = {
            "precision": float(precision[1]),
            "recall": float(recall[1]),
            "f1": float(f1[1]),
            "iou": float(_div(tp1, tp1 + fp1 + fn1)),
        }
    return result


def scalar_summary(result: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The headline numbers of ``compute()`` as ``{name: float}`` for MLflow; ``None`` is left out.

    Keys: ``accuracy``, ``macro_f1``, ``balanced_accuracy`` and, for two classes,
    ``binary/precision``, ``binary/recall``, ``binary/f1``, ``binary/iou`` (each after ``prefix``).
    """
    flat = {key: result.get(key) for key in ("accuracy", "macro_f1", "balanced_accuracy")}
    for key, value in (result.get("binary") or {}).items():
        flat[f"binary/{key}"] = value
    return {f"{prefix}{key}": float(value) for key, value in flat.items() if value is not None}
