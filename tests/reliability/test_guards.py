"""NaN/Inf guards, rollbacks and batches that raise."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest
import torch

from spectral_training.training import ContractError, TrainingError, fit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from faults import WeightsPerStep  # noqa: E402


def poisoned_forward(poisoned_calls: set[int] | None = None, from_call: int | None = None):
    """forward_fn giving a NaN loss on some training calls (0-based), recording their sample ids."""
    state = {"calls": 0, "poisoned_ids": []}

    def forward(model, batch):
        output = model(batch["cube"])
        if model.training:
            call = state["calls"]
            state["calls"] += 1
            if (poisoned_calls and call in poisoned_calls) or (from_call is not None and call >= from_call):
                state["poisoned_ids"].append(list(batch["sample_id"]))
                return {"loss": output["loss"] * float("nan")}
        return output

    return forward, state


def same(first, second) -> bool:
    return all(torch.equal(first[name], second[name]) for name in first)


def test_nan_step_is_skipped_counted_and_logged_with_sample_ids(tiny, tmp_path, caplog):
    model = tiny.build_model()
    recorder = WeightsPerStep(model)
    forward, state = poisoned_forward(poisoned_calls={3, 7})  # steps 4 and 8
    train_loader, val_loader = tiny.build_loaders()
    with caplog.at_level(logging.WARNING, logger="spectral_training.training"):
        result = fit(model, train_loader, val_loader, tiny.tiny_config(epochs=1), run_dir=tmp_path,
                     callbacks=[recorder], forward_fn=forward)

    assert result.stopped_reason == "completed" and result.steps == 12
    assert result.bad_steps == 2 and result.history[0]["bad_steps"] == 2
    for step in (4, 8):
        assert same(recorder.weights[step], recorder.weights[step - 1]), f"step {step} changed the weights"
        assert recorder.metrics[step]["bad_step"] == 1.0
    assert not same(recorder.weights[5], recorder.weights[4])  # training went on afterwards
    assert all(torch.isfinite(value).all() for value in model.state_dict().values())
    for ids in state["poisoned_ids"]:
        assert any(", ".join(ids) in record.getMessage() and "non-finite loss" in record.getMessage()
                   for record in caplog.records)
    report = json.loads((tmp_path / "guard_report.json").read_text())
    assert [entry["step"] for entry in report["bad_steps"]] == [4, 8]
    assert report["bad_steps"][0]["sample_ids"] == state["poisoned_ids"][0]
    assert report["bad_steps"][0]["loss"] == "nan"


def test_bad_streak_rolls_back_with_lower_lr_then_stops_with_a_report(tiny, tmp_path):
    model = tiny.build_model()
    recorder = WeightsPerStep(model)
    forward, _ = poisoned_forward(from_call=5)  # steps 1-5 fine, NaN from step 6 on
    train_loader, val_loader = tiny.build_loaders()
    config = tiny.tiny_config(epochs=3, scheduler="none", checkpoint_every_steps=2, max_bad_steps=2,
                              max_rollbacks=1, rollback_lr_factor=0.5)
    result = fit(model, train_loader, val_loader, config, run_dir=tmp_path, callbacks=[recorder], forward_fn=forward)

    assert result.stopped_reason == "too_many_bad_steps"
    assert result.steps == 9  # bad 6, 7 -> rollback; bad 8, 9 -> stop
    assert result.bad_steps == 4 and result.rollbacks == 1
    assert recorder.metrics[7]["lr"] == pytest.approx(1e-2)
    assert recorder.metrics[8]["lr"] == pytest.approx(0.5e-2)  # lowered by the rollback
    # rollback.pt held the state before the newest healthy checkpoint (step 4): step 2
    assert same(model.state_dict(), recorder.weights[2])
    report = json.loads((tmp_path / "guard_report.json").read_text())
    assert report["stopped_reason"] == "too_many_bad_steps"
    assert [entry["step"] for entry in report["bad_steps"]] == [6, 7, 8, 9]
    assert all(len(entry["sample_ids"]) == 4 for entry in report["bad_steps"])
    assert report["rollback_events"][0]["restored_step"] == 2
    # resuming a run that stopped for good returns at once
    again = fit(tiny.build_model(), *tiny.build_loaders(), config, run_dir=tmp_path, forward_fn=forward)
    assert again.stopped_reason == "too_many_bad_steps" and again.steps == 9


def test_batch_that_raises_is_skipped_and_its_ids_recorded(tiny, tmp_path):
    def forward(model, batch):
        if "s007" in batch["sample_id"]:
            raise ValueError("corrupt tile")
        return model(batch["cube"])

    model = tiny.build_model()
    train_loader, val_loader = tiny.build_loaders()
    result = fit(model, train_loader, val_loader, tiny.tiny_config(epochs=2), run_dir=tmp_path, forward_fn=forward)

    assert result.stopped_reason == "completed"
    assert [entry["skipped_batches"] for entry in result.history] == [1, 1]  # one batch per epoch
    report = json.loads((tmp_path / "guard_report.json").read_text())
    assert len(report["failed_batches"]) == 2
    for failure in report["failed_batches"]:
        assert failure["error"] == "ValueError: corrupt tile"
        assert "s007" in failure["sample_ids"] and len(failure["sample_ids"]) == 4
        assert set(failure["sample_ids"]) <= set(result.skipped_sample_ids)
    assert result.skipped_sample_ids[0] == report["failed_batches"][0]["sample_ids"][0]


def test_every_batch_raising_stops_with_a_clear_error(tiny, tmp_path):
    def forward(model, batch):
        raise RuntimeError("shape mismatch")

    train_loader, val_loader = tiny.build_loaders(train_count=12)
    with pytest.raises(TrainingError, match="every batch of epoch 0 raised.*shape mismatch"):
        fit(tiny.build_model(), train_loader, val_loader, tiny.tiny_config(epochs=5), run_dir=tmp_path,
            forward_fn=forward)
    # a long epoch gives up after max_consecutive_failed_batches instead of grinding through it
    train_loader, val_loader = tiny.build_loaders(train_count=400)
    with pytest.raises(TrainingError, match="3 batches in a row raised"):
        fit(tiny.build_model(), train_loader, val_loader,
            tiny.tiny_config(epochs=5, max_consecutive_failed_batches=3),
            run_dir=tmp_path / "long", forward_fn=forward)


def test_contract_errors_are_not_swallowed(tiny, tmp_path):
    train_loader, val_loader = tiny.build_loaders(train_count=8)
    with pytest.raises(ContractError, match="dict with a 'loss'"):
        fit(tiny.build_model(), train_loader, val_loader, tiny.tiny_config(), run_dir=tmp_path,
            forward_fn=lambda model, batch: model(batch["cube"])["loss"])


def test_keyboard_interrupt_is_not_swallowed(tiny, tmp_path):
    def forward(model, batch):
        raise KeyboardInterrupt

    train_loader, val_loader = tiny.build_loaders(train_count=8)
    with pytest.raises(KeyboardInterrupt):
        fit(tiny.build_model(), train_loader, val_loader, tiny.tiny_config(), run_dir=tmp_path, forward_fn=forward)
