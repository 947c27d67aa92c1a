"""kill -9 of the real spectral MAE at four kinds of moment, each resumed: bit-identical to a run never killed."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch

from spectral_training.training import TrainingCallback, load_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mae_problem  # noqa: E402
from faults import start_forked, wait_for  # noqa: E402

SPE = mae_problem.STEPS_PER_EPOCH  # 6 steps per epoch, 4 epochs, checkpoints every 4 steps and at epoch ends

# (where, step, the step of the checkpoint the next run resumes from)
KILLS = [
    ("before_step", SPE + 1, SPE),  # inside the first step of epoch 1: resumes from the epoch-end checkpoint
    ("after_step", SPE + 3, SPE + 2),  # mid-epoch, between two periodic checkpoints
    ("after_checkpoint", 2 * SPE + 4, 2 * SPE + 4),  # just after a periodic checkpoint was written
    ("validation", 3 * SPE, 3 * SPE - 2),  # during the validation of epoch 2
]


def victim(run_dir: Path, where: str, at: int) -> None:
    """Train in run_dir and park (for the test's SIGKILL) at the given moment."""
    torch.set_num_threads(1)
    done = {"step": 0}

    def park(what: str) -> None:
        (run_dir / "parked.tmp").write_text(what)
        os.replace(run_dir / "parked.tmp", run_dir / "parked")
        time.sleep(300)

    class Park(TrainingCallback):
        def on_fit_start(self, config, state):
            done["step"] = state["start_step"]

        def on_step_end(self, step, metrics):
            done["step"] = step
            if where == "after_step" and step == at:
                park(f"after step {step}")

        def on_checkpoint(self, path, is_best):
            if where == "after_checkpoint" and done["step"] == at:
                park(f"after the checkpoint of step {at}")

    def forward(model, batch):
        if where == "before_step" and model.training and done["step"] == at - 1:
            park(f"inside step {at}")
        if where == "validation" and not model.training and done["step"] == at:
            park(f"validating after step {at}")
        return model(batch["cube"])

    mae_problem.train(run_dir, [Park()], forward)


def test_mae_killed_at_four_moments_and_resumed_is_bit_identical(tmp_path):
    """Promise: the spectral MAE killed with kill -9 at the first step of an epoch, mid-epoch, just after a
    checkpoint and during validation, resumed each time, ends with exactly the weights, EMA and history of
    a run never interrupted (CPU, one thread)."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for where, step, resumes_from in KILLS:
        process = start_forked(victim, run_dir, where, step)
        wait_for(run_dir / "parked", process)
        process.kill()  # SIGKILL from outside: no handler runs, no final checkpoint
        process.join()
        (run_dir / "parked").unlink()
        assert load_checkpoint(run_dir / "last.pt")["progress"]["global_step"] == resumes_from, where

    resumed_model, resumed = mae_problem.train(run_dir)
    reference_model, reference = mae_problem.train(tmp_path / "reference")
    assert resumed.resumed and resumed.stopped_reason == "completed" and resumed.steps == 4 * SPE
    mae_problem.tiny.assert_same_weights(reference_model.state_dict(), resumed_model.state_dict())
    mae_problem.tiny.assert_same_weights(load_checkpoint(reference.last_checkpoint)["ema"]["module"],
                                         load_checkpoint(resumed.last_checkpoint)["ema"]["module"])
    assert [e["val_loss"] for e in resumed.history] == [e["val_loss"] for e in reference.history]
