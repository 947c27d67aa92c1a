"""best.pt and early stopping follow a named metric (`monitor`, `mode`), fed by `val_metrics`."""

from __future__ import annotations

import logging

import pytest
import torch

from spectral_training.training import ConfigError, EpochMetrics, fit, load_checkpoint


def scripted_metric(values: list[float], batches_seen: list[int] | None = None) -> type:
    """An EpochMetrics class whose n-th instance (n-th validation pass) reports values[n] as "acc"."""
    passes = iter(values)

    class Scripted:
        def __init__(self) -> None:
            self.value = next(passes)
            self.batches = 0

        def update(self, output, batch) -> None:
            assert "loss" in output and isinstance(batch["cube"], torch.Tensor)
            self.batches += 1

        def compute(self) -> dict[str, float]:
            if batches_seen is not None:
                batches_seen.append(self.batches)
            return {"acc": torch.tensor(self.value)}  # a 0-d tensor, as torchmetrics returns

    return Scripted


def run(tiny, run_dir, values, batches_seen=None, **settings):
    model = tiny.build_model(dropout=0.0)
    train_loader, val_loader = tiny.build_loaders()  # 16 val samples = 4 val batches
    config = tiny.tiny_config(**settings)
    return fit(model, train_loader, val_loader, config, run_dir=run_dir,
               val_metrics=scripted_metric(values, batches_seen))


def test_best_pt_is_the_epoch_with_the_highest_monitored_value_not_the_lowest_loss(tiny, tmp_path, caplog):
    batches_seen: list[int] = []
    with caplog.at_level(logging.INFO, logger="spectral_training.training"):
        result = run(tiny, tmp_path, [0.5, 0.9, 0.6, 0.7], batches_seen, epochs=4, monitor="val/acc", mode="max")

    assert isinstance(scripted_metric([1.0])(), EpochMetrics)
    val_losses = [entry["val_loss"] for entry in result.history]
    assert min(range(4), key=val_losses.__getitem__) != 1  # loss and metric disagree on the best epoch
    assert [entry["val_acc"] for entry in result.history] == pytest.approx([0.5, 0.9, 0.6, 0.7])
    assert batches_seen == [4, 4, 4, 4]  # a fresh object per pass, updated on every val batch
    assert (result.monitor, result.mode) == ("val_acc", "max")
    assert result.best_epoch == 1 and result.best_metric == pytest.approx(0.9)
    assert result.best_val_loss == val_losses[1]
    best = load_checkpoint(result.best_checkpoint)
    assert best["history"][-1]["epoch"] == 1 and best["early_stopping"]["best_metric"] == pytest.approx(0.9)
    assert "*best val_acc*" in caplog.text


def test_early_stopping_with_mode_max_stops_after_patience_epochs_without_an_increase(tiny, tmp_path, caplog):
    # The val loss keeps falling, so only the metric can trigger the stop.
    with caplog.at_level(logging.INFO, logger="spectral_training.training"):
        result = run(tiny, tmp_path, [0.5, 0.7, 0.7, 0.6, 0.9, 0.9], epochs=6, monitor="val_acc", mode="max",
                     patience=2)

    assert result.stopped_reason == "early_stopping"
    assert result.epochs_run == 4  # epoch 1 best; 2 (equal is no increase) and 3 without one
    assert result.best_epoch == 1 and result.best_metric == pytest.approx(0.7)
    assert "early stopping: val_acc did not improve (mode max)" in caplog.text


def test_an_unknown_monitor_is_a_config_error_listing_the_available_keys(tiny, tmp_path):
    model = tiny.build_model()
    train_loader, val_loader = tiny.build_loaders(train_count=8)
    with pytest.raises(ConfigError, match=r"'monitor' = 'val_acc'.*available keys: .*val_loss.*val_mse"):
        fit(model, train_loader, val_loader, tiny.tiny_config(epochs=2, monitor="val_acc", mode="max"),
            run_dir=tmp_path)


def test_a_metric_name_that_would_overwrite_the_val_loss_is_refused(tiny, tmp_path):
    from spectral_training.training import ContractError

    class LossNamed:
        def update(self, output, batch):
            pass

        def compute(self):
            return {"loss": 0.0}

    model = tiny.build_model()
    train_loader, val_loader = tiny.build_loaders(train_count=8)
    with pytest.raises(ContractError, match="'val_loss' is already taken"):
        fit(model, train_loader, val_loader, tiny.tiny_config(epochs=1), run_dir=tmp_path, val_metrics=LossNamed)


def test_a_checkpoint_with_the_old_early_stopping_dict_resumes(tiny, tmp_path):
    _, first = tiny.train(tmp_path, epochs=2, ema=True, augment=False)
    checkpoint = torch.load(first.last_checkpoint, weights_only=True)
    # The format written before `monitor` existed: val loss only, and timm's EMA RNG state.
    # A best val loss no later epoch can beat shows the stored best is honoured, not reset.
    checkpoint["early_stopping"] = {"best_val_loss": 1e-9, "best_epoch": 1, "epochs_without_improvement": 0}
    checkpoint["ema"]["generator"] = torch.Generator().get_state()
    torch.save(checkpoint, first.last_checkpoint)

    _, resumed = tiny.train(tmp_path, epochs=6, ema=True, augment=False, patience=2)

    assert resumed.resumed and resumed.stopped_reason == "early_stopping"
    assert resumed.epochs_run == 4  # epochs 2 and 3 did not beat the stored best
    assert (resumed.monitor, resumed.mode) == ("val_loss", "min")
    assert resumed.best_epoch == 1 and resumed.best_metric == resumed.best_val_loss == 1e-9
    saved = load_checkpoint(resumed.last_checkpoint)["early_stopping"]
    assert saved["monitor"] == "val_loss" and saved["epochs_without_improvement"] == 2


def test_with_ema_the_metrics_come_from_the_raw_weights_only(tiny, tmp_path):
    batches_seen: list[int] = []
    result = run(tiny, tmp_path, [0.1, 0.2], batches_seen, epochs=2, ema=True, monitor="val_acc", mode="max")
    assert batches_seen == [4, 4]  # one metric object per epoch: the EMA pass computes val_loss_ema only
    assert all("val_loss_ema" in entry and "val_acc_ema" not in entry for entry in result.history)
    assert result.best_epoch == 1


def test_resuming_with_another_monitor_restarts_the_best_at_the_resumed_epoch(tiny, tmp_path, caplog):
    first = run(tiny, tmp_path, [0.9, 0.9], epochs=2)  # val_loss, min: the metric is recorded, not followed
    assert first.monitor == "val_loss"

    resumed = run(tiny, tmp_path, [0.3, 0.2], epochs=4, monitor="val_acc", mode="max")

    assert resumed.resumed and "the best so far is forgotten" in caplog.text
    assert resumed.best_epoch == 2 and resumed.best_metric == pytest.approx(0.3)  # not 0.9 in other units
    assert load_checkpoint(resumed.best_checkpoint)["history"][-1]["epoch"] == 2
