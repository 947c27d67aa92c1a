"""SIGTERM/SIGINT: finish the step, checkpoint, return "signal"; handlers restored afterwards."""

from __future__ import annotations

import os
import signal
import time

from spectral_training.training import TrainingCallback, load_checkpoint


def test_sigterm_writes_a_checkpoint_and_exits_with_143(tiny, tmp_path, script_tools):
    write_script, start_script = script_tools
    script = write_script(tmp_path, "train.py", """
        run_dir = Path(sys.argv[1])

        class WaitForTerm(TrainingCallback):
            # At step 3, tell the test we are here and wait until it has sent SIGTERM.
            def on_step_end(self, step, metrics):
                if step == 3:
                    (run_dir / "at_step_3").touch()
                    while not (run_dir / "term_sent").exists():
                        time.sleep(0.02)

        model, result = tiny.train(run_dir, [WaitForTerm()], epochs=2)
        print("RESULT", result.stopped_reason, result.steps)
        sys.exit(result.exit_code)
    """)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    process = start_script(script, str(run_dir))
    deadline = time.monotonic() + 240
    while not (run_dir / "at_step_3").exists():
        assert process.poll() is None, process.communicate()[0]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    (run_dir / "term_sent").touch()
    output, _ = process.communicate(timeout=120)

    assert process.returncode == 128 + signal.SIGTERM, output  # 143, documented in FitResult.exit_code
    assert "RESULT signal 3" in output
    checkpoint = load_checkpoint(run_dir / "last.pt")
    assert checkpoint["progress"]["global_step"] == 3 and checkpoint["progress"]["batch_in_epoch"] == 3


def test_sigint_in_process_stops_gracefully_and_restores_the_handler(tiny, tmp_path):
    class Interrupt(TrainingCallback):
        def on_step_end(self, step, metrics):
            if step == 2:
                os.kill(os.getpid(), signal.SIGINT)

    previous = signal.getsignal(signal.SIGINT)
    _, result = tiny.train(tmp_path, [Interrupt()], epochs=2)

    assert result.stopped_reason == "signal" and result.steps == 2 and result.exit_code == 130
    assert load_checkpoint(tmp_path / "last.pt")["progress"]["global_step"] == 2
    assert signal.getsignal(signal.SIGINT) is previous
    # and the run resumes from there
    _, resumed = tiny.train(tmp_path, epochs=2)
    assert resumed.resumed and resumed.stopped_reason == "completed" and resumed.steps == 24


def test_fit_outside_the_main_thread_installs_no_handlers(tiny, tmp_path):
    # Python only allows signal handlers in the main thread; fit must still run elsewhere.
    import threading

    outcome = {}

    def run():
        try:
            outcome["result"] = tiny.train(tmp_path, epochs=1)[1]
        except BaseException as error:  # surfaced by the assert below
            outcome["error"] = error

    worker = threading.Thread(target=run)
    worker.start()
    worker.join(timeout=120)
    assert "error" not in outcome, outcome.get("error")
    assert outcome["result"].stopped_reason == "completed"
