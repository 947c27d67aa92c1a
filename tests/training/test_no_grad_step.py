"""fp16 + GradScaler: a step in which no parameter received a gradient is skipped, not a crash.

Before the fix, GradScaler.step raised "No inf checks were recorded for this optimizer" for such
a window (its unscale_ finds no gradient to check). The CPU tests run a real fp16 autocast and a
real CPU GradScaler; the CUDA test runs the same on a GPU when one is present.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from spectral_training.training import fit
from spectral_training.training import step as step_module
from spectral_training.training.amp import AmpSettings
from spectral_training.training.guards import GuardState
from spectral_training.training.optim import LearningRateControl
from spectral_training.training.signals import StopRequest
from spectral_training.training.state import Progress
from spectral_training.training.step import Learner, TrainStep

NO_GRAD = "no parameter received a gradient"


def _learner(model: nn.Module, device: str) -> Learner:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    amp = AmpSettings(device, torch.float16, True)
    return Learner(model, model, optimizer, None, LearningRateControl(optimizer, None), amp.make_grad_scaler(), None,
                   amp, torch.device(device))


def _forward(model: nn.Module, batch: dict) -> dict:
    """The model's MSE, or, for a batch flagged `skip`, a loss that reaches none of its parameters
    (as when every patch of the batch is masked out of the loss)."""
    if bool(batch["skip"][0]):
        x = batch["cube"].clone().requires_grad_()
        return {"loss": (x.float() ** 2).mean()}
    return {"loss": ((model(batch["cube"]).float() - batch["cube"].float()) ** 2).mean()}


def _windows(device: str) -> tuple[nn.Module, TrainStep, GuardState, list[dict]]:
    torch.manual_seed(0)
    model = nn.Linear(8, 8).to(device)
    batches = [{"cube": torch.randn(4, 8, device=device), "sample_id": [f"s{i}{j}" for j in range(4)],
                "skip": torch.tensor([i == 0] * 4)} for i in range(2)]
    return model, TrainStep(_learner(model, device), _forward, clip_grad_norm=1.0), GuardState(), batches


def _run_two_windows(device: str) -> None:
    model, train_step, guard, batches = _windows(device)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    progress, stop, it = Progress(), StopRequest(), iter(batches)

    skipped, _, _ = train_step.run(it, 1, progress, guard, stop)  # the no-gradient window
    assert skipped.kind == "bad"
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert guard.bad_steps[-1]["reason"] == NO_GRAD and guard.bad_steps[-1]["sample_ids"] == batches[0]["sample_id"]

    progress.global_step += 1
    trained, _, _ = train_step.run(it, 1, progress, guard, stop)  # mixed precision still on: a real update
    assert trained.kind == "ok" and train_step.learner.scaler is not None
    assert not all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_window_without_gradients_is_skipped_and_the_next_one_trains_under_fp16():
    _run_two_windows("cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_same_on_cuda():
    _run_two_windows("cuda")


class _Data(torch.utils.data.Dataset):
    def __init__(self) -> None:
        self.cubes = torch.randn(16, 8, generator=torch.Generator().manual_seed(1))

    def __len__(self) -> int:
        return len(self.cubes)

    def __getitem__(self, i: int) -> dict:
        # samples 0-3 form the first batch (no shuffle): it gets no gradient
        return {"cube": self.cubes[i], "sample_id": f"s{i:02d}", "skip": i < 4}


def test_fit_under_fp16_skips_the_window_logs_it_and_finishes(tmp_path, monkeypatch, tiny):
    monkeypatch.setattr(step_module, "resolve_amp", lambda mode, device: AmpSettings("cpu", torch.float16, True))
    torch.manual_seed(0)
    model = nn.Linear(8, 8)
    loader = torch.utils.data.DataLoader(_Data(), batch_size=4, shuffle=False)
    result = fit(model, loader, None, tiny.tiny_config(epochs=2, amp="fp16"), run_dir=tmp_path, forward_fn=_forward)
    assert result.stopped_reason == "completed" and result.steps == 8 and result.bad_steps == 2
    report = json.loads((tmp_path / "guard_report.json").read_text())
    assert [entry["reason"] for entry in report["bad_steps"]] == [NO_GRAD, NO_GRAD]
    assert report["bad_steps"][0]["sample_ids"] == ["s00", "s01", "s02", "s03"]
