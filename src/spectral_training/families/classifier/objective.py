"""How a labelled batch becomes a loss: cross-entropy with class weights, label smoothing and
timm's Mixup/CutMix (soft targets) while training."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from timm.data import Mixup
from torch import nn

log = logging.getLogger(__name__)

MIXUP_KEYS = ("mixup_alpha", "cutmix_alpha", "cutmix_minmax", "prob", "switch_prob", "mode")


def soft_target_cross_entropy(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """Mean over the batch of ``-sum_c w_c t_c log p_c`` (timm's SoftTargetCrossEntropy when w = 1).

    logits, target: (B, K); weight: (K,) or None.
    """
    log_probs = F.log_softmax(logits.float(), dim=-1)
    per_class = -target * log_probs  # (B, K)
    if weight is not None:
        per_class = per_class * weight
    return per_class.sum(dim=-1).mean()


class ClassifierObjective:
    """The engine's ``forward_fn`` for classifiers: ``{"loss", "logits"}``.

    While the model trains: Mixup/CutMix when configured (an odd-sized batch is not mixed, since
    timm mixes a batch with its reverse), label smoothing, class weights. While it is evaluated
    (validation): plain class-weighted cross-entropy on the true labels, so the validation loss
    measures the fit itself.
    """

    def __init__(self, num_classes: int, *, class_weights: Sequence[float] | None = None, label_smoothing: float = 0.0,
                 mixup: Mapping[str, Any] | None = None) -> None:
        self.num_classes = int(num_classes)
        self.label_smoothing = float(label_smoothing)
        self._weights = torch.tensor(class_weights, dtype=torch.float32) if class_weights is not None else None
        self.mixup = None
        if mixup:
            self.mixup = Mixup(**dict(mixup), label_smoothing=self.label_smoothing, num_classes=self.num_classes)

    def _weight(self, device: torch.device) -> torch.Tensor | None:
        if self._weights is None:
            return None
        if self._weights.device != device:
            self._weights = self._weights.to(device)
        return self._weights

    def __call__(self, model: nn.Module, batch: Mapping[str, Any]) -> dict[str, Any]:
        x, labels = batch["cube"], batch["label"].long()
        weight = self._weight(x.device)
        if model.training and self.mixup is not None and x.shape[0] % 2 == 0:
            x, soft = self.mixup(x, labels)
            logits = model(x)
            return {"loss": soft_target_cross_entropy(logits, soft, weight), "logits": logits}
        logits = model(x)
        smoothing = self.label_smoothing if model.training else 0.0
        loss = F.cross_entropy(logits.float(), labels, weight=weight, label_smoothing=smoothing)
        return {"loss": loss, "logits": logits}
