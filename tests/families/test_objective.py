"""The classifier objective: weighted cross-entropy, label smoothing, Mixup with soft targets."""

import torch
import torch.nn.functional as F
from torch import nn

from spectral_training.families.classifier.objective import ClassifierObjective, soft_target_cross_entropy


def test_soft_targets_of_one_hot_labels_give_the_weighted_cross_entropy():
    logits = torch.randn(6, 3)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    weight = torch.tensor([0.5, 1.0, 2.0])
    soft = F.one_hot(labels, 3).float()
    expected = (F.cross_entropy(logits, labels, weight=weight, reduction="none")).mean()
    torch.testing.assert_close(soft_target_cross_entropy(logits, soft, weight), expected)


def test_validation_loss_has_no_smoothing_and_no_mixup():
    model = nn.Sequential(nn.Flatten(), nn.Linear(2 * 4 * 4, 3)).eval()
    batch = {"cube": torch.randn(4, 2, 4, 4), "label": torch.tensor([0, 1, 2, 0])}
    objective = ClassifierObjective(3, label_smoothing=0.3, mixup={"mixup_alpha": 0.8, "cutmix_alpha": 1.0})
    out = objective(model, batch)
    torch.testing.assert_close(out["loss"], F.cross_entropy(model(batch["cube"]), batch["label"]))


def test_training_with_mixup_mixes_the_batch_and_uses_soft_targets():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(2 * 4 * 4, 3)).train()
    x = torch.randn(4, 2, 4, 4)
    batch = {"cube": x.clone(), "label": torch.tensor([0, 1, 2, 0])}
    out = ClassifierObjective(3, mixup={"mixup_alpha": 1.0, "cutmix_alpha": 0.0, "prob": 1.0})(model, batch)
    assert torch.isfinite(out["loss"]) and out["logits"].shape == (4, 3)
    assert not torch.allclose(batch["cube"], x)  # timm mixes in place: the model saw mixed images
