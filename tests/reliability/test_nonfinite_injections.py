"""NaN in the inputs, NaN in the loss, and a finite loss with an Inf gradient: skipped and logged,
a streak rolls back to rollback.pt at a lower lr, the next streak stops the run with a report."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest
import torch

from spectral_training.training import fit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from faults import WeightsPerStep  # noqa: E402


class _InfGradient(torch.autograd.Function):
    """Identity forward (the loss stays finite); an Inf gradient backward."""

    @staticmethod
    def forward(ctx, value):
        return value.view_as(value)

    @staticmethod
    def backward(ctx, grad):
        return grad * float("inf")


def nan_inputs(model, batch):
    cube = batch["cube"].clone()
    cube[:, 0, 0, 0] = float("nan")  # one poisoned pixel per sample reaches the model
    return model(cube)


def nan_loss(model, batch):
    output = model(batch["cube"])
    return {"loss": output["loss"] * float("nan")}


def inf_gradient(model, batch):
    output = model(batch["cube"])
    return {"loss": _InfGradient.apply(output["loss"])}


INJECTIONS = {"nan_inputs": (nan_inputs, "non-finite loss"), "nan_loss": (nan_loss, "non-finite loss"),
              "inf_gradient": (inf_gradient, "non-finite gradient norm")}


def same(first, second) -> bool:
    return all(torch.equal(first[name], second[name]) for name in first)


@pytest.mark.parametrize("injection", sorted(INJECTIONS))
def test_nonfinite_steps_are_skipped_rolled_back_then_stop_cleanly(tiny, tmp_path, caplog, injection):
    """Promise: NaN inputs, a NaN loss, or a finite loss whose gradient is Inf: each step is skipped
    (weights untouched) and logged with its sample ids; max_bad_steps in a row roll back to rollback.pt
    (the state *before* the newest healthy checkpoint, as the README says) at rollback_lr_factor x the
    lr; the next streak stops the run with stopped_reason too_many_bad_steps and guard_report.json."""
    poison, reason = INJECTIONS[injection]
    calls = {"n": 0}

    def forward(model, batch):  # steps 1-5 healthy, every training step from 6 on poisoned
        if model.training:
            calls["n"] += 1
            if calls["n"] >= 6:
                return poison(model, batch)
        return model(batch["cube"])

    model = tiny.build_model()
    recorder = WeightsPerStep(model)
    config = tiny.tiny_config(epochs=3, scheduler="none", checkpoint_every_steps=2, max_bad_steps=2,
                              max_rollbacks=1, rollback_lr_factor=0.5)
    with caplog.at_level(logging.WARNING, logger="spectral_training.training"):
        result = fit(model, *tiny.build_loaders(), config, run_dir=tmp_path, callbacks=[recorder],
                     forward_fn=forward)

    assert result.stopped_reason == "too_many_bad_steps" and result.steps == 9
    assert result.bad_steps == 4 and result.rollbacks == 1
    assert same(recorder.weights[7], recorder.weights[5])  # bad steps 6, 7 changed nothing ...
    assert same(model.state_dict(), recorder.weights[2])  # ... then rollback.pt: step 2, before checkpoint 4
    assert recorder.metrics[8]["lr"] == pytest.approx(0.5 * recorder.metrics[7]["lr"])
    logged = [r.getMessage() for r in caplog.records if "update skipped" in r.getMessage()]
    assert len(logged) == 4 and all(reason in message and "samples: s" in message for message in logged)
    report = json.loads((tmp_path / "guard_report.json").read_text())
    assert report["stopped_reason"] == "too_many_bad_steps"
    assert [(e["step"], e["reason"]) for e in report["bad_steps"]] == [(s, reason) for s in (6, 7, 8, 9)]
    assert all(len(e["sample_ids"]) == 4 for e in report["bad_steps"])
    assert report["rollback_events"][0]["restored_from"] == "rollback.pt"
    assert report["rollback_events"][0]["restored_step"] == 2
