"""A process that dies half way through writing a checkpoint leaves the previous one intact."""

from __future__ import annotations

from spectral_training.training import load_checkpoint


def test_death_mid_write_keeps_the_previous_checkpoint(tiny, tmp_path, script_tools):
    write_script, start_script = script_tools
    script = write_script(tmp_path, "train.py", """
        import io
        run_dir = Path(sys.argv[1])

        class DieDuringNextSave(TrainingCallback):
            # Once the step-4 checkpoint is written, make the next torch.save write half its bytes and die.
            def on_checkpoint(self, path, is_best):
                if torch.load(path, weights_only=True)["progress"]["global_step"] != 4:
                    return
                real_save = torch.save

                def dying_save(obj, handle, *args, **kwargs):
                    buffer = io.BytesIO()
                    real_save(obj, buffer, *args, **kwargs)
                    data = buffer.getvalue()
                    handle.write(data[: len(data) // 2])
                    handle.flush()
                    os.fsync(handle.fileno())
                    os._exit(17)

                torch.save = dying_save

        tiny.train(run_dir, [DieDuringNextSave()], epochs=1, checkpoint_every_steps=2)
    """)
    run_dir = tmp_path / "run"
    process = start_script(script, str(run_dir))
    output, _ = process.communicate(timeout=240)
    assert process.returncode == 17, output

    partial = [p for p in run_dir.iterdir() if ".tmp-" in p.name]
    assert len(partial) == 1  # the half-written temp file ...
    assert load_checkpoint(run_dir / "last.pt")["progress"]["global_step"] == 4  # ... never became last.pt

    _, result = tiny.train(run_dir, epochs=1, checkpoint_every_steps=2)
    assert result.resumed and result.stopped_reason == "completed" and result.steps == 12
    assert not [p for p in run_dir.iterdir() if ".tmp-" in p.name]  # cleaned on start
