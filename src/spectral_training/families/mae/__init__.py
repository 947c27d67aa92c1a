"""The spectral MAE family (pretraining)."""

from .family import MAEFamily
from .model import build_mae_model, mae_build_kwargs

__all__ = ["MAEFamily", "build_mae_model", "mae_build_kwargs"]
