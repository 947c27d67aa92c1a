"""A tiny, real training problem for the engine tests, importable by path from subprocess scripts.

Cubes are float32 (C=4, H=4, W=4); the model is a 2-layer autoencoder with dropout (so the
torch RNG matters) returning {"loss": mse, "loss_parts": {"mse": ...}}. The dataset can add a
random flip and noise drawn from the global torch RNG, so RNG restore on resume is exercised.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn
from torch.utils.data import Dataset

from spectral_training.training import TrainConfig, TrainingCallback, fit, make_loader

CHANNELS, SIZE = 4, 4


class CubeDataset(Dataset):
    """`count` fixed random cubes with ids "s000", "s001", ...; optional random augmentation."""

    def __init__(self, count: int, *, seed: int = 0, augment: bool = False) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.cubes = torch.randn(count, CHANNELS, SIZE, SIZE, generator=generator)
        self.augment = augment

    def __len__(self) -> int:
        return len(self.cubes)

    def __getitem__(self, index: int) -> dict[str, Any]:
        cube = self.cubes[index]
        if self.augment:  # draws from the global RNG of whichever process loads the sample
            if torch.rand(()) < 0.5:
                cube = cube.flip(-1)
            cube = cube + 0.01 * torch.randn_like(cube)
        return {"cube": cube, "sample_id": f"s{index:03d}"}


class TinyAutoencoder(nn.Module):
    """Flatten -> Linear -> ReLU -> Dropout -> Linear, trained to reconstruct its input."""

    def __init__(self, hidden: int = 16, dropout: float = 0.1) -> None:
        super().__init__()
        features = CHANNELS * SIZE * SIZE
        self.encoder = nn.Linear(features, hidden)
        self.dropout = nn.Dropout(dropout)
        self.decoder = nn.Linear(hidden, features)

    def forward(self, cube: torch.Tensor) -> dict[str, Any]:
        flat = cube.flatten(1)  # (B, C*H*W)
        reconstruction = self.decoder(self.dropout(torch.relu(self.encoder(flat))))
        mse = ((reconstruction.float() - flat.float()) ** 2).mean()
        return {"loss": mse, "loss_parts": {"mse": mse.detach()}}


def tiny_config(**overrides: Any) -> TrainConfig:
    """Small, fast defaults: fp32, no bars, no periodic checkpoints unless asked."""
    settings: dict[str, Any] = dict(
        epochs=2, lr=1e-2, warmup_steps=2, amp="off", progress=False, checkpoint_every_steps=None,
        log_every_steps=1000, seed=0, clip_grad_norm=1.0,
    )
    settings.update(overrides)
    return TrainConfig.from_dict(settings, source="tiny_config")


def build_model(seed: int = 0, **kwargs: Any) -> TinyAutoencoder:
    torch.manual_seed(seed)
    return TinyAutoencoder(**kwargs)


def build_loaders(
    *, train_count: int = 48, val_count: int = 16, batch_size: int = 4, seed: int = 0, augment: bool = False,
    num_workers: int = 0,
) -> tuple[Any, Any]:
    train = make_loader(CubeDataset(train_count, seed=1, augment=augment), batch_size, shuffle=True, seed=seed,
                        num_workers=num_workers)
    val = make_loader(CubeDataset(val_count, seed=2), batch_size, shuffle=False, seed=seed)
    return train, val


def train(run_dir: Path, callbacks: Iterable[TrainingCallback] = (), *, augment: bool = True,
          **config_overrides: Any) -> tuple[TinyAutoencoder, Any]:
    """Build model and loaders, run fit; returns (model, FitResult)."""
    model = build_model()
    train_loader, val_loader = build_loaders(augment=augment)
    result = fit(model, train_loader, val_loader, tiny_config(**config_overrides), run_dir=run_dir,
                 metadata={"bands": ["b1", "b2", "b3", "b4"]}, callbacks=list(callbacks))
    return model, result


def assert_same_weights(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> None:
    """Bit-identical state dicts (same keys, torch.equal on every tensor)."""
    assert first.keys() == second.keys()
    different = [name for name in first if not torch.equal(first[name], second[name])]
    assert not different, f"tensors differ: {different}"
