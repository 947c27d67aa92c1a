"""Helpers of the fault-injection tests: victims in forked processes, killed from outside."""

from __future__ import annotations

from spectral_training.training import TrainingCallback


class WeightsPerStep(TrainingCallback):
    """Copies of the weights and the metrics after every step."""

    def __init__(self, model) -> None:
        self.model = model
        self.weights = {0: {k: v.clone() for k, v in model.state_dict().items()}}
        self.metrics = {}

    def on_step_end(self, step, metrics):
        self.weights[step] = {k: v.clone() for k, v in self.model.state_dict().items()}
        self.metrics[step] = metrics


def start_forked(target, *args):
    """Run `target(*args)` in a forked copy of this test process and return the Process.

    torch and the package are already imported, so a victim starts in milliseconds rather than the
    seconds of a fresh interpreter; it is a separate process, killed from outside with SIGKILL.
    """
    import multiprocessing

    process = multiprocessing.get_context("fork").Process(target=target, args=args, daemon=True)
    process.start()
    return process


def wait_for(path, process, *, timeout: float = 120.0) -> None:
    """Wait until `path` exists while `process` is alive."""
    import time

    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.is_alive(), f"the victim process ended (exit code {process.exitcode}) before {path.name}"
        assert time.monotonic() < deadline, f"timed out waiting for {path}"
        time.sleep(0.02)
