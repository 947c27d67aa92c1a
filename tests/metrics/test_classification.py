"""ClassificationMetrics against hand-computed confusion matrices, alone and across two processes."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from torchmetrics.functional.classification import multiclass_f1_score

from spectral_training.metrics.classification import ClassificationMetrics, metrics_from_confusion, scalar_summary


def _logits(pred, k):
    """One-hot logits that argmax to ``pred``."""
    return torch.nn.functional.one_hot(torch.tensor(pred), k).float() * 5.0 - 1.0


# 3 classes, 10 samples. Confusion matrix (rows = true, columns = predicted):
#            pred 0  pred 1  pred 2
#   true 0     3       1       0      support 4
#   true 1     1       2       1      support 4
#   true 2     0       0       2      support 2
TARGET_3 = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]
PRED_3 = [0, 0, 0, 1, 0, 1, 1, 2, 2, 2]
CM_3 = [[3, 1, 0], [1, 2, 1], [0, 0, 2]]


def test_three_classes_by_hand():
    m = ClassificationMetrics(3, ["water", "field", "forest"])
    m.update(_logits(PRED_3[:6], 3), torch.tensor(TARGET_3[:6]))  # two batches
    m.update(_logits(PRED_3[6:], 3), torch.tensor(TARGET_3[6:]))
    out = m.compute()
    assert out["confusion_matrix"] == CM_3
    assert out["num_samples"] == 10
    assert out["accuracy"] == pytest.approx(7 / 10)
    # precision = TP / column sum, recall = TP / row sum, F1 = 2PR / (P + R)
    p = [3 / 4, 2 / 3, 2 / 3]
    r = [3 / 4, 2 / 4, 2 / 2]
    f1 = [2 * a * b / (a + b) for a, b in zip(p, r)]  # 0.75, 0.5714..., 0.8
    assert f1 == pytest.approx([0.75, 4 / 7, 0.8])
    for name, pi, ri, fi, s in zip(["water", "field", "forest"], p, r, f1, [4, 4, 2]):
        assert out["per_class"][name] == pytest.approx({"precision": pi, "recall": ri, "f1": fi, "support": s})
    assert out["macro_f1"] == pytest.approx((0.75 + 4 / 7 + 0.8) / 3)
    assert out["balanced_accuracy"] == pytest.approx((3 / 4 + 1 / 2 + 1) / 3)
    assert "binary" not in out
    json.dumps(out)  # plain Python values


def test_macro_f1_skips_classes_absent_from_target_and_prediction_like_torchmetrics():
    # 4 classes; class 3 never occurs; class 2 is predicted once but never true.
    target = torch.tensor([0, 0, 1, 1, 1])
    pred = [0, 2, 1, 1, 0]
    m = ClassificationMetrics(4)
    m.update(_logits(pred, 4), target)
    out = m.compute()
    f1_0 = 2 * 1 / (2 * 1 + 1 + 1)  # TP 1, FP 1 (a true 1), FN 1 (predicted 2)
    f1_1 = 2 * 2 / (2 * 2 + 0 + 1)
    assert out["per_class"]["2"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert out["per_class"]["3"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert out["macro_f1"] == pytest.approx((f1_0 + f1_1 + 0.0) / 3)  # class 2 counts, class 3 does not
    expected = multiclass_f1_score(torch.tensor(pred), target, num_classes=4, average="macro")
    assert out["macro_f1"] == pytest.approx(float(expected))
    assert out["balanced_accuracy"] == pytest.approx((1 / 2 + 2 / 3) / 2)  # classes with support only


def test_binary_precision_recall_f1_iou_by_hand():
    # TP = 3 (1->1), FN = 1 (1->0), FP = 2 (0->1), TN = 4 (0->0)
    target = torch.tensor([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    pred = [1, 1, 1, 0, 1, 1, 0, 0, 0, 0]
    m = ClassificationMetrics(2, ["background", "crop"])
    m.update(_logits(pred, 2), target)
    out = m.compute()
    assert out["confusion_matrix"] == [[4, 2], [1, 3]]
    assert out["binary"] == pytest.approx({"precision": 3 / 5, "recall": 3 / 4, "f1": 6 / 9, "iou": 3 / 6})
    assert out["per_class"]["crop"]["f1"] == pytest.approx(2 * 3 / (2 * 3 + 2 + 1))
    assert scalar_summary(out, prefix="val/") == pytest.approx(
        {
            "val/accuracy": 7 / 10,
            "val/macro_f1": (2 * 4 / (8 + 1 + 2) + 6 / 9) / 2,
            "val/balanced_accuracy": (4 / 6 + 3 / 4) / 2,
            "val/binary/precision": 3 / 5,
            "val/binary/recall": 3 / 4,
            "val/binary/f1": 6 / 9,
            "val/binary/iou": 1 / 2,
        }
    )


def test_negative_targets_are_ignored():
    m = ClassificationMetrics(3)
    target = torch.tensor([0, -1, 2, -100, 1])
    m.update(_logits([0, 1, 2, 0, 0], 3), target)
    out = m.compute()
    assert out["num_samples"] == 3
    assert out["confusion_matrix"] == [[1, 0, 0], [1, 0, 0], [0, 0, 1]]
    assert out["accuracy"] == pytest.approx(2 / 3)
    m.update(_logits([1, 1], 3), torch.tensor([-1, -1]))  # a batch with nothing labelled
    assert m.compute()["num_samples"] == 3


def test_empty_gives_none_and_summary_skips_it():
    m = ClassificationMetrics(2)
    out = m.compute()
    assert (out["accuracy"], out["macro_f1"], out["balanced_accuracy"], out["num_samples"]) == (None, None, None, 0)
    assert scalar_summary(out) == {"binary/precision": 0.0, "binary/recall": 0.0, "binary/f1": 0.0, "binary/iou": 0.0}


def test_bad_inputs_are_named():
    m = ClassificationMetrics(3)
    with pytest.raises(ValueError, match="num_classes is 3"):
        m.update(_logits([0], 3), torch.tensor([3]))
    with pytest.raises(ValueError, match=r"logits must be \(B, 3\)"):
        m.update(torch.zeros(2, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="class_names has 2 names"):
        ClassificationMetrics(3, ["a", "b"])


def test_metrics_from_confusion_matches_the_accumulator():
    assert metrics_from_confusion(torch.tensor(CM_3))["macro_f1"] == pytest.approx((0.75 + 4 / 7 + 0.8) / 3)


_DDP_SCRIPT = textwrap.dedent(
    """
    import json, sys, torch, torch.distributed as dist
    from spectral_training.metrics.classification import ClassificationMetrics
    rank, store = int(sys.argv[1]), sys.argv[2]
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    target, pred = json.loads(sys.argv[3])
    half = slice(0, 6) if rank == 0 else slice(6, None)  # each rank sees its own shard
    m = ClassificationMetrics(3)
    m.update(torch.nn.functional.one_hot(torch.tensor(pred[half]), 3).float(), torch.tensor(target[half]))
    out = m.compute()
    m.update(torch.nn.functional.one_hot(torch.tensor(pred[half]), 3).float(), torch.tensor(target[half]))
    again = m.compute()  # local state kept accumulating after the sync
    print(json.dumps([out["confusion_matrix"], out["accuracy"], again["num_samples"]]))
    dist.destroy_process_group()
    """
)


@pytest.mark.slow  # two fresh interpreters importing torch: ~5-10 s
def test_compute_sums_the_shards_of_two_processes(tmp_path):
    script = tmp_path / "ddp_metrics.py"
    script.write_text(_DDP_SCRIPT)
    args = json.dumps([TARGET_3, PRED_3])
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(rank), str(tmp_path / "store"), args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(2)
    ]
    results = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    for cm, accuracy, num_again in results:
        assert cm == CM_3  # both ranks see the whole matrix
        assert accuracy == pytest.approx(7 / 10)
        assert num_again == 20
