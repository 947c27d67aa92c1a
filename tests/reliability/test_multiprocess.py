"""Data-parallel training through torchrun (`training/launch.py`), on the CPU with gloo.

The workers import the problem from tests/reliability (ddp_problem.py), put on their PYTHONPATH.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from spectral_training.training import TrainConfig, load_checkpoint
from spectral_training.training.launch import LaunchError, launch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import ddp_problem  # noqa: E402

TWO_PROCESSES = TrainConfig.from_dict({"nproc_per_node": 2})


@pytest.fixture(autouse=True)
def _workers_import_path(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])))


def assert_close_runs(first: dict, second: dict) -> None:
    assert first["steps"] == second["steps"]
    for (train_a, val_a), (train_b, val_b) in zip(first["history"], second["history"], strict=True):
        assert train_a == pytest.approx(train_b, rel=1e-5) and val_a == pytest.approx(val_b, rel=1e-5)
    for name, tensor in first["weights"].items():
        torch.testing.assert_close(tensor, second["weights"][name], rtol=1e-5, atol=1e-6)


def test_two_processes_with_the_same_global_batch_match_one_process(tmp_path):
    """Promise: `train.nproc_per_node: 2` (torchrun, gloo) with the same global batch reaches the same
    losses and weights as one process, within float tolerance; rank 0's result comes back."""
    one = ddp_problem.train_tiny(tmp_path / "one")
    two = launch(ddp_problem.train_tiny, tmp_path / "two", config=TWO_PROCESSES)
    assert (one["world_size"], two["world_size"]) == (1, 2)
    assert two["steps"] == 12 and two["stopped_reason"] == "completed"
    assert_close_runs(one, two)
    assert load_checkpoint(tmp_path / "two" / "last.pt")["rng"]["world_size"] == 2  # written once, by rank 0


def test_two_compiled_processes_match_one_eager_process(tmp_path):
    """Promise: `train.compile` works under DDP (compile wraps the DDP module, whose no_sync and
    gradient hooks still apply): the same losses and weights as one eager process."""
    one = ddp_problem.train_tiny(tmp_path / "one")
    two = launch(ddp_problem.train_tiny, tmp_path / "two", config=TWO_PROCESSES, compile=True,
                 compile_backend="aot_eager")
    assert two["world_size"] == 2 and two["steps"] == 12
    assert_close_runs(one, two)
    state = load_checkpoint(tmp_path / "two" / "last.pt")["model"]
    assert not any(key.startswith(("_orig_mod", "module.")) for key in state)  # the plain module's keys


def test_a_killed_rank_ends_the_run_with_a_checkpoint_that_resumes(tmp_path):
    """Promise: kill -9 of one rank ends the whole run (torchrun stops the others) with a clear error, and
    the last checkpoint resumes on two processes to the same end as an uninterrupted run."""
    run_dir = tmp_path / "run"
    outcome: dict = {}

    def first_launch() -> None:
        try:
            outcome["result"] = launch(ddp_problem.train_tiny, run_dir, tmp_path, 4, config=TWO_PROCESSES)
        except BaseException as error:  # noqa: BLE001 - handed to the test thread
            outcome["error"] = error

    thread = threading.Thread(target=first_launch)
    thread.start()
    deadline = time.monotonic() + 120
    while not (tmp_path / "paused").exists():  # rank 1, about to take step 5 (step 4 checkpointed)
        assert thread.is_alive() and time.monotonic() < deadline, outcome
        time.sleep(0.05)
    os.kill(int((tmp_path / "paused").read_text()), signal.SIGKILL)
    thread.join(timeout=120)
    assert not thread.is_alive()
    assert isinstance(outcome.get("error"), LaunchError), outcome
    # rank 1 is named; rank 0 too when torchrun stopped it before it could write its own error
    assert re.search(r"rank\(s\) \[(0, )?1\] died without an error", str(outcome["error"])), outcome["error"]
    assert "resume" in str(outcome["error"])
    checkpoint = load_checkpoint(run_dir / "last.pt")
    assert checkpoint["progress"]["global_step"] == 4 and checkpoint["rng"]["world_size"] == 2

    resumed = launch(ddp_problem.train_tiny, run_dir, config=TWO_PROCESSES)
    assert resumed["resumed"] and resumed["stopped_reason"] == "completed"
    assert_close_runs(ddp_problem.train_tiny(tmp_path / "reference"), resumed)
