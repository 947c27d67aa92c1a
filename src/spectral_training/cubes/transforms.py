"""Transforms on (C, H, W) float tensors, built from parameters.

A pipeline's parameters list the steps by name, for example::

    transforms:
      train: [{random_crop: 32}, {flip: true}, {rotate90: true}]
      eval:  [{center_crop: 32}]

Normalisation with the band statistics always comes first and is not listed. Each step knows
the spatial size it outputs, so the output shape is known before any data is read: that is what
transform validation compares with the model's expected input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F


class TransformError(ValueError):
    """A transform list that cannot be built, with the parameter that is wrong."""


@dataclass
class Normalise:
    """(x - mean) / std per band. Bands with zero std are divided by 1 (and flagged elsewhere)."""

    mean: torch.Tensor  # (C,)
    std: torch.Tensor  # (C,)

    def __post_init__(self) -> None:
        self.mean = torch.as_tensor(self.mean, dtype=torch.float32)
        std = torch.as_tensor(self.std, dtype=torch.float32)
        self.zero_std_bands = torch.nonzero(~(std > 0)).flatten().tolist()
        self.std = torch.where(std > 0, std, torch.ones_like(std))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean[:, None, None]) / self.std[:, None, None]

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        """Back to physical units; works on (C, H, W) and (B, C, H, W)."""
        shape = (-1, 1, 1)
        return x * self.std.to(x.device).view(shape) + self.mean.to(x.device).view(shape)

    def out_size(self, size: int) -> int:
        return size


@dataclass
class RandomCrop:
    size: int

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        top = int(torch.randint(0, h - self.size + 1, (1,)))
        left = int(torch.randint(0, w - self.size + 1, (1,)))
        return x[..., top : top + self.size, left : left + self.size]

    def out_size(self, size: int) -> int:
        if self.size > size:
            raise TransformError(f"random_crop: {self.size} is larger than its input of {size} px")
        return self.size


@dataclass
class CenterCrop:
    size: int

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        top, left = (h - self.size) // 2, (w - self.size) // 2
        return x[..., top : top + self.size, left : left + self.size]

    def out_size(self, size: int) -> int:
        if self.size > size:
            raise TransformError(f"center_crop: {self.size} is larger than its input of {size} px")
        return self.size


@dataclass
class Resize:
    size: int

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.unsqueeze(0) if x.dim() == 3 else x
        out = F.interpolate(batch, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
        return out.squeeze(0) if x.dim() == 3 else out

    def out_size(self, size: int) -> int:
        return self.size


@dataclass
class RandomFlip:
    """Horizontal and vertical flips, each with probability 0.5."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if torch.rand(()) < 0.5:
            x = x.flip(-1)
        if torch.rand(()) < 0.5:
            x = x.flip(-2)
        return x

    def out_size(self, size: int) -> int:
        return size


@dataclass
class RandomRotate90:
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.rot90(x, int(torch.randint(0, 4, (1,))), dims=(-2, -1))

    def out_size(self, size: int) -> int:
        return size


_STEPS = {
    "random_crop": lambda v: RandomCrop(int(v)),
    "center_crop": lambda v: CenterCrop(int(v)),
    "resize": lambda v: Resize(int(v)),
    "flip": lambda v: RandomFlip() if v else None,
    "rotate90": lambda v: RandomRotate90() if v else None,
}


class Compose:
    """Normalisation, then the listed steps; knows its output size for a given input size."""

    def __init__(self, normalise: Normalise, steps: Sequence, names: Sequence[str]):
        self.normalise = normalise
        self.steps = list(steps)
        self.names = list(names)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalise(x)
        for step in self.steps:
            x = step(x)
        return x.contiguous()

    def out_size(self, size: int) -> int:
        for name, step in zip(self.names, self.steps):
            try:
                size = step.out_size(size)
            except TransformError as err:
                raise TransformError(f"{name}: {err}") from None
        return size

    def describe(self) -> list[str]:
        return ["normalise(band_stats)"] + [f"{n}" for n in self.names]


def build_transforms(spec: Sequence[dict] | None, band_stats: dict, *, where: str) -> Compose:
    """A :class:`Compose` from a list like ``[{random_crop: 32}, {flip: true}]``.

    ``where`` names the parameter (e.g. ``transforms.train``) so errors point at it.
    """
    steps, names = [], []
    for i, item in enumerate(spec or []):
        if not isinstance(item, dict) or len(item) != 1:
            raise TransformError(f"{where}[{i}] must be a one-key mapping like {{random_crop: 32}}, got {item!r}")
        (name, value), = item.items()
        if name not in _STEPS:
            raise TransformError(f"{where}[{i}]: unknown transform '{name}'; known: {', '.join(sorted(_STEPS))}")
        step = _STEPS[name](value)
        if step is not None:
            steps.append(step)
            names.append(f"{where}[{i}].{name}={value}")
    return Compose(Normalise(band_stats["mean"], band_stats["std"]), steps, names)
