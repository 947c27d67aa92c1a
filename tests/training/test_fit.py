"""The fit loop on a tiny problem: learning, overfit mode, early stopping, callbacks."""

from __future__ import annotations

import math

import torch

from spectral_training.training import TrainingCallback, fit


class Recorder(TrainingCallback):
    def __init__(self) -> None:
        self.events: list[tuple] = []

    def on_fit_start(self, config, state):
        self.events.append(("fit_start", state["resumed"], state["batches_per_epoch"]))

    def on_step_end(self, step, metrics):
        self.events.append(("step", step, metrics))

    def on_epoch_end(self, epoch, metrics):
        self.events.append(("epoch", epoch, metrics))

    def on_checkpoint(self, path, is_best):
        self.events.append(("checkpoint", path.name, is_best))

    def on_fit_end(self, result):
        self.events.append(("fit_end", result.stopped_reason))


def test_loss_falls_and_history_is_complete(tiny, tmp_path):
    recorder = Recorder()
    model, result = tiny.train(tmp_path, [recorder], epochs=4, augment=False)

    assert result.stopped_reason == "completed"
    assert result.epochs_run == 4 and result.steps == 4 * 12
    first, last = result.history[0], result.history[-1]
    assert last["train_loss"] < 0.95 * first["train_loss"]
    assert last["val_loss"] < first["val_loss"]
    assert set(first) >= {"epoch", "train_loss", "val_loss", "lr", "bad_steps", "skipped_batches", "seconds",
                          "train_mse", "val_mse"}
    assert result.best_val_loss == min(entry["val_loss"] for entry in result.history)
    assert result.best_checkpoint == tmp_path / "best.pt" and result.last_checkpoint == tmp_path / "last.pt"
    # callbacks: one fit_start, a step event per step with the documented metrics, epoch ends, fit_end
    kinds = [event[0] for event in recorder.events]
    assert kinds[0] == "fit_start" and kinds[-1] == "fit_end"
    steps = [event for event in recorder.events if event[0] == "step"]
    assert [event[1] for event in steps] == list(range(1, 49))
    assert {"train_loss", "lr", "grad_norm", "epoch", "bad_step", "train_mse"} <= set(steps[0][2])
    assert [event[1] for event in recorder.events if event[0] == "epoch"] == [0, 1, 2, 3]


def test_overfit_batches_trains_and_validates_on_the_first_batches_only(tiny, tmp_path):
    seen_training: list[set[str]] = []
    seen_validation: set[str] = set()

    def forward(model, batch):
        ids = set(batch["sample_id"])
        if model.training:
            seen_training.append(ids)
        else:
            seen_validation.update(ids)
        return model(batch["cube"])

    model = tiny.build_model(dropout=0.0)
    train_loader, val_loader = tiny.build_loaders()
    result = fit(model, train_loader, val_loader, tiny.tiny_config(epochs=25, overfit_batches=2, lr=3e-2),
                 run_dir=tmp_path, forward_fn=forward)

    first_two = set().union(*seen_training[:2])
    assert len(first_two) == 8
    assert all(ids <= first_two for ids in seen_training)  # the same 2 batches, every epoch
    assert seen_validation == first_two  # validated on them too, not on val_loader
    assert result.steps == 25 * 2
    assert result.history[-1]["train_loss"] < 0.5 * result.history[0]["train_loss"]


def test_early_stopping_after_patience_epochs_without_improvement(tiny, tmp_path):
    def forward(model, batch):
        output = model(batch["cube"])
        if not model.training:  # validation loss that never improves after the first epoch
            return {"loss": torch.tensor(1.0)}
        return output

    model = tiny.build_model()
    train_loader, val_loader = tiny.build_loaders(train_count=8)
    result = fit(model, train_loader, val_loader, tiny.tiny_config(epochs=20, patience=2),
                 run_dir=tmp_path, forward_fn=forward)

    assert result.stopped_reason == "early_stopping"
    assert result.epochs_run == 3  # epoch 0 best, epochs 1 and 2 without improvement
    assert result.best_epoch == 0 and result.best_val_loss == 1.0
    assert math.isclose(result.history[-1]["val_loss"], 1.0)


def test_a_plain_dataloader_works_with_a_warning(tiny, tmp_path, caplog):
    loader = torch.utils.data.DataLoader(tiny.CubeDataset(16), batch_size=4, shuffle=False)
    result = fit(tiny.build_model(), loader, None, tiny.tiny_config(epochs=2), run_dir=tmp_path)
    assert result.stopped_reason == "completed" and result.steps == 8
    assert result.best_val_loss is None and result.best_checkpoint is None  # no validation, no best.pt
    assert "not made by spectral_training.training.make_loader" in caplog.text
