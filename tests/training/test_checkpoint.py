"""Checkpoint contents, safe loading, metadata conversion and atomic writes (in process)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spectral_training.training import CheckpointError, atomic_torch_save, load_checkpoint, to_checkpoint_safe


def test_checkpoint_loads_weights_only_and_holds_the_whole_state(tiny, tmp_path):
    metadata = {"band_stats": {"mean": np.array([0.1, 0.2]), "count": np.int64(7)}, "bands": ("b1", "b2"),
                "model_kwargs": {"hidden": 16}}
    model = tiny.build_model()
    train_loader, val_loader = tiny.build_loaders(train_count=16)
    from spectral_training.training import fit

    result = fit(model, train_loader, val_loader, tiny.tiny_config(epochs=1, ema=True), run_dir=tmp_path,
                 metadata=metadata)

    checkpoint = torch.load(result.last_checkpoint, weights_only=True)
    assert checkpoint["metadata"] == {"band_stats": {"mean": [0.1, 0.2], "count": 7}, "bands": ["b1", "b2"],
                                      "model_kwargs": {"hidden": 16}}
    assert checkpoint["optimizer"]["state"]  # AdamW moments
    assert checkpoint["scheduler"]["t_initial"] == 4 and checkpoint["scheduler"]["warmup_t"] == 2
    assert "scaler" in checkpoint and checkpoint["scaler"] is None  # fp32 run: no GradScaler
    assert checkpoint["ema"]["module"].keys() == model.state_dict().keys()
    rng = checkpoint["rng"]["per_rank"][0]
    assert {"torch_cpu", "torch_cuda", "numpy", "python"} <= rng.keys()
    assert rng["numpy"]["keys"].shape == (624,) and len(rng["python"]["state"]) == 625
    assert checkpoint["progress"] == {**checkpoint["progress"], "epoch": 1, "batch_in_epoch": 0, "global_step": 4}
    assert checkpoint["data_order"]["seed"] == 0 and checkpoint["config"]["ema"] is True
    assert checkpoint["history"] == result.history
    # best.pt is a full checkpoint too, and load_checkpoint puts weights (or EMA weights) in a model
    fresh = tiny.build_model(seed=5)
    loaded = load_checkpoint(tmp_path / "best.pt", fresh, use_ema=True)
    assert all(torch.equal(fresh.state_dict()[k], loaded["ema"]["module"][k]) for k in fresh.state_dict())


def test_load_checkpoint_refuses_files_it_did_not_write(tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a checkpoint written by"):
        load_checkpoint(tmp_path / "other.pt")
    (tmp_path / "truncated.pt").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint(tmp_path / "truncated.pt")


def test_metadata_that_a_safe_load_cannot_hold_is_refused_by_name():
    with pytest.raises(TypeError, match=r"metadata\['transform'\]\['fn'\] is a builtins.function"):
        to_checkpoint_safe({"transform": {"fn": lambda x: x}})


def test_atomic_save_keeps_the_old_file_when_a_write_fails(tmp_path, monkeypatch):
    target = tmp_path / "last.pt"
    atomic_torch_save({"step": 1}, target)

    def failing_save(obj, handle, *args, **kwargs):
        handle.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        atomic_torch_save({"step": 2}, target)
    monkeypatch.undo()
    assert torch.load(target, weights_only=True) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # the temp file was cleaned up
