"""Exact resume: a run interrupted mid-epoch (even by kill -9) ends bit-identical to one that never was."""

from __future__ import annotations

import time

import torch

from spectral_training.training import load_checkpoint, make_loader

# Enough to exercise everything resume must restore: EMA, warmup + cosine, dropout and data
# augmentation drawing from the global RNG, and periodic mid-epoch checkpoints.
SETTINGS = dict(epochs=2, ema=True, checkpoint_every_steps=2, warmup_steps=3)


def test_in_process_resume_from_a_mid_epoch_checkpoint_is_bit_identical(tiny, tmp_path):
    reference_model, reference = tiny.train(tmp_path / "reference", **SETTINGS)

    _, interrupted = tiny.train(tmp_path / "resumed", max_steps=5, **SETTINGS)
    assert interrupted.stopped_reason == "max_steps" and interrupted.steps == 5
    assert load_checkpoint(tmp_path / "resumed" / "last.pt")["progress"]["batch_in_epoch"] == 5

    resumed_model, resumed = tiny.train(tmp_path / "resumed", **SETTINGS)

    assert resumed.resumed and resumed.stopped_reason == "completed" and resumed.steps == reference.steps
    tiny.assert_same_weights(reference_model.state_dict(), resumed_model.state_dict())
    reference_ema = load_checkpoint(reference.last_checkpoint)["ema"]["module"]
    tiny.assert_same_weights(reference_ema, load_checkpoint(resumed.last_checkpoint)["ema"]["module"])
    for before, after in zip(reference.history, resumed.history):
        assert (before["train_loss"], before["val_loss"]) == (after["train_loss"], after["val_loss"])


def test_kill_9_mid_epoch_then_resume_is_bit_identical(tiny, tmp_path, script_tools):
    write_script, start_script = script_tools
    script = write_script(tmp_path, "train.py", f"""
        import logging
        logging.basicConfig(level=logging.INFO)
        run_dir, weights_path, pause_at = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])

        class PauseAt(TrainingCallback):
            # Parks the process after step `pause_at` (checkpoint of step 4 written, step 5 not) for the kill.
            def on_step_end(self, step, metrics):
                if step == pause_at:
                    (run_dir / "paused").write_text(str(step))
                    time.sleep(300)

        model, result = tiny.train(run_dir, [PauseAt()], **{SETTINGS!r})
        torch.save(model.state_dict(), weights_path)
        print("RESULT", result.stopped_reason, result.steps, "resumed" if result.resumed else "fresh")
    """)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    victim = start_script(script, str(run_dir), str(tmp_path / "unused.pt"), "5")

    # The reference run, computed here while the victim starts up.
    reference_model, reference = tiny.train(tmp_path / "reference", **SETTINGS)

    deadline = time.monotonic() + 240
    while not (run_dir / "paused").exists():
        assert victim.poll() is None, victim.communicate()[0]
        assert time.monotonic() < deadline, "the training script never reached step 5"
        time.sleep(0.1)
    victim.kill()  # SIGKILL: no handler, no final checkpoint
    victim.wait()
    assert load_checkpoint(run_dir / "last.pt")["progress"]["global_step"] == 4

    resumer = start_script(script, str(run_dir), str(tmp_path / "resumed.pt"), "-1")
    output, _ = resumer.communicate(timeout=240)
    assert resumer.returncode == 0, output
    assert f"RESULT completed {reference.steps} resumed" in output
    assert "resumed from" in output
    tiny.assert_same_weights(reference_model.state_dict(),
                             torch.load(tmp_path / "resumed.pt", weights_only=True))


def test_make_loader_resumes_an_epoch_mid_way_with_identical_augmented_batches(tiny):
    # Two workers: which worker loads a sample differs between the full and the resumed epoch,
    # yet the per-sample seeds make the augmentations identical.
    loader = make_loader(tiny.CubeDataset(20, augment=True), 4, shuffle=True, seed=3, num_workers=2)
    loader.batch_sampler.set_epoch(1)
    full_epoch = list(loader)
    loader.batch_sampler.set_epoch(1, start_batch=3)
    resumed_epoch = list(loader)
    loader.batch_sampler.set_epoch(0)
    other_epoch = list(loader)

    assert len(full_epoch) == 5 and len(resumed_epoch) == 2
    for full, resumed in zip(full_epoch[3:], resumed_epoch):
        assert full["sample_id"] == resumed["sample_id"]
        assert torch.equal(full["cube"], resumed["cube"])
    assert [b["sample_id"] for b in other_epoch] != [b["sample_id"] for b in full_epoch]
    assert sorted(i for b in full_epoch for i in b["sample_id"]) == [f"s{i:03d}" for i in range(20)]


def test_resume_settings_true_without_checkpoint_and_false_with_one(tiny, tmp_path):
    import pytest

    from spectral_training.training import CheckpointError

    with pytest.raises(CheckpointError, match="resume: true but .*last.pt does not exist"):
        tiny.train(tmp_path, epochs=1, resume=True)
    _, first = tiny.train(tmp_path, epochs=1)
    # resume: false starts over, moving the old files aside instead of mixing or deleting them
    _, second = tiny.train(tmp_path, epochs=1, resume=False)
    assert not second.resumed and second.steps == first.steps
    moved = [p for p in tmp_path.iterdir() if p.name.startswith("previous-")]
    assert len(moved) == 1 and (moved[0] / "last.pt").exists() and (moved[0] / "best.pt").exists()
