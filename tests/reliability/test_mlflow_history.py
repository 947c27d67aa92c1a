"""The MLflow curves of a run killed with kill -9 and resumed are complete."""

from __future__ import annotations

import sys
from pathlib import Path

import mlflow
import torch
from mlflow.tracking import MlflowClient

from spectral_training.tracking import MlflowTrainingCallback
from spectral_training.training import TrainingCallback

sys.path.insert(0, str(Path(__file__).resolve().parent))
from faults import start_forked, wait_for  # noqa: E402

SETTINGS = dict(epochs=2, checkpoint_every_steps=4)  # 2 x 12 steps; checkpoints every 4 steps


def _victim(tmp_path: Path) -> None:
    """Open an MLflow run, train with the engine's MLflow callback, park after step 7 for the SIGKILL:
    steps 5-7 come after the last checkpoint (step 4) and are lost with the process."""
    import time

    torch.set_num_threads(1)
    tiny = sys.modules["spectral_training_tests_tiny_problem"]

    class ParkAfterStep7(TrainingCallback):
        def on_step_end(self, step, metrics):
            if step == 7:
                (tmp_path / "parked").touch()
                time.sleep(300)

    with mlflow.start_run() as run:
        (tmp_path / "run_id").write_text(run.info.run_id)
        # flush_every is 20: only the flush at the step-4 checkpoint sends steps 1-4 before the kill
        callback = MlflowTrainingCallback(tmp_path / "runs", "tiny")
        tiny.train(tmp_path / "runs" / "tiny", [callback, ParkAfterStep7()], **SETTINGS)


def test_killed_and_resumed_run_has_every_step_in_its_mlflow_history(tiny, tmp_path, monkeypatch):
    """Promise: after kill -9 and a resume into the same MLflow run, step/train_loss (and step/lr) have a
    value at every step 1..N, not only at the first and last: nothing logged before the kill is lost and
    the steps redone after the last checkpoint are logged again."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    victim = start_forked(_victim, tmp_path)
    wait_for(tmp_path / "parked", victim)
    victim.kill()
    victim.join()
    run_id = (tmp_path / "run_id").read_text()

    with mlflow.start_run(run_id=run_id):  # what the resume marker makes `kedro run` do
        callback = MlflowTrainingCallback(tmp_path / "runs", "tiny")
        _, result = tiny.train(tmp_path / "runs" / "tiny", [callback], **SETTINGS)
    assert result.resumed and result.steps == 24

    client = MlflowClient()
    for key in ("step/train_loss", "step/lr"):
        assert sorted({m.step for m in client.get_metric_history(run_id, key)}) == list(range(1, 25)), key
    assert sorted(m.step for m in client.get_metric_history(run_id, "epoch/val_loss")) == [0, 1]
