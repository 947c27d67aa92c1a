"""The engine's per-epoch validation metrics for classifiers (accuracy, macro-F1, ...)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from spectral_training.metrics.classification import ClassificationMetrics, scalar_summary


class ValidationMetrics:
    """``update(output, batch)`` with the objective's logits and the batch's labels; ``compute()``
    gives the flat numbers (``accuracy``, ``macro_f1``, ...) that the history records as
    ``val_<name>`` and that ``train.monitor`` may name. torchmetrics syncs them across DDP ranks."""

    def __init__(self, num_classes: int, class_names: list[str]) -> None:
        self.metrics = ClassificationMetrics(num_classes, class_names)

    def update(self, output: Mapping[str, Any], batch: Mapping[str, Any]) -> None:
        self.metrics.update(output["logits"].detach().float(), batch["label"])

    def compute(self) -> dict[str, float]:
        return scalar_summary(self.metrics.compute())
