"""A process killed half way through writing a checkpoint leaves the previous one intact.

(This replaces the earlier test whose process ended itself with os._exit mid-write: the kill now
comes from outside, while the process is inside torch.save.)
"""

from __future__ import annotations

import sys
from pathlib import Path

from spectral_training.training import load_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parent))  # faults.py


def _save_then_hang_inside_the_next_write(run_dir):
    """Train the tiny problem; once step 4's checkpoint is written, the next torch.save writes half its
    bytes (flushed to disk) and hangs there, its pid announced, waiting for the test's SIGKILL."""
    import io
    import os
    import time

    import torch

    from spectral_training.training import TrainingCallback

    torch.set_num_threads(1)
    tiny = sys.modules["spectral_training_tests_tiny_problem"]

    class HangInNextSave(TrainingCallback):
        def on_checkpoint(self, path, is_best):
            if torch.load(path, weights_only=True)["progress"]["global_step"] != 4:
                return
            real_save = torch.save

            def hanging_save(obj, handle, *args, **kwargs):
                buffer = io.BytesIO()
                real_save(obj, buffer, *args, **kwargs)
                data = buffer.getvalue()
                handle.write(data[: len(data) // 2])
                handle.flush()
                os.fsync(handle.fileno())
                (run_dir / "inside_save").write_text(str(os.getpid()))
                time.sleep(300)

            torch.save = hanging_save

    tiny.train(run_dir, [HangInNextSave()], epochs=1, checkpoint_every_steps=2)


def test_sigkill_from_outside_inside_a_checkpoint_write_keeps_the_previous_checkpoint(tiny, tmp_path):
    """Promise: a process killed (SIGKILL, from another process) while it is inside a checkpoint write
    leaves the previous checkpoint loadable as last.pt, and the run resumes from it."""
    from faults import start_forked, wait_for

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    process = start_forked(_save_then_hang_inside_the_next_write, run_dir)
    wait_for(run_dir / "inside_save", process)
    process.kill()
    process.join()

    assert [p.name for p in run_dir.iterdir() if ".tmp-" in p.name] == [f".last.pt.tmp-{process.pid}"]
    assert load_checkpoint(run_dir / "last.pt")["progress"]["global_step"] == 4
    _, result = tiny.train(run_dir, epochs=1, checkpoint_every_steps=2)
    assert result.resumed and result.stopped_reason == "completed" and result.steps == 12
