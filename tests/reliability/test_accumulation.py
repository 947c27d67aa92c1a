"""Gradient accumulation is the larger batch, split."""

from __future__ import annotations

import torch

from spectral_training.training import fit


def test_accumulating_two_batches_of_4_updates_like_one_batch_of_8(tiny, tmp_path):
    """Promise: accumulation_steps=2 x batch 4 gives the same updates (float tolerance) as batch 8: the
    same samples per step, the loss averaged over them, the same lr schedule and clipping."""
    runs = {}
    for name, batch_size, accumulation in (("big_batch", 8, 1), ("accumulated", 4, 2)):
        model = tiny.build_model(dropout=0.0)
        train_loader, val_loader = tiny.build_loaders(batch_size=batch_size)
        result = fit(model, train_loader, val_loader,
                     tiny.tiny_config(epochs=2, accumulation_steps=accumulation, clip_grad_norm=0.5),
                     run_dir=tmp_path / name)
        runs[name] = (model.state_dict(), result)
    (big_weights, big), (acc_weights, acc) = runs["big_batch"], runs["accumulated"]
    assert big.steps == acc.steps == 12
    for name, tensor in big_weights.items():
        torch.testing.assert_close(acc_weights[name], tensor, rtol=1e-5, atol=1e-6)
    for first, second in zip(big.history, acc.history, strict=True):
        assert abs(first["train_loss"] - second["train_loss"]) < 1e-5 * first["train_loss"]
    assert not torch.equal(big_weights["encoder.weight"], tiny.build_model(dropout=0.0).state_dict()["encoder.weight"])
