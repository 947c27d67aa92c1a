"""The MAE's evaluation settings (validated before training starts, used after it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class EvaluationParams:
    split: str = "test"
    batch_size: int = 16
    seed: int = 0  # the masks drawn for evaluation
    use_ema: bool = False
    checkpoint: str = "best"  # best | last
    plot_samples: int = 4
    spectra_pixels: int = 4
    rgb_fallback: tuple[int, int, int] = (0, 1, 2)  # band indices when wavelengths are unknown
    max_batches: int | None = None
    show_progress: bool = True

    @classmethod
    def from_dict(cls, raw: dict) -> "EvaluationParams":
        unknown = set(raw) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"evaluation parameters: unknown key(s) {sorted(unknown)}; known: {sorted(cls.__dataclass_fields__)}")
        params = cls(**raw)
        params.rgb_fallback = tuple(int(i) for i in params.rgb_fallback)
        if params.checkpoint not in ("best", "last"):
            raise ValueError(f"evaluation.checkpoint must be best or last, got {params.checkpoint!r}")
        return params
