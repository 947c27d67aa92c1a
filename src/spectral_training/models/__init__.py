"""Models: the spectral masked autoencoder, its position codes, losses and named sizes.

Engine code (no Kedro). Entry point::

    from spectral_training.models import build_mae, MAE_VARIANTS
    model = build_mae("tiny", num_bands=30, image_size=500, spatial_patch=25, spectral_patch=5)
    out = model(x)  # {"loss", "loss_parts", "pred", "mask"}
"""

from spectral_training.models.losses import (
    DEFAULT_LOSS_WEIGHTS,
    DEFAULT_VALUE_RANGE,
    LOSSES,
    MAESpectralLoss,
    mae_spectral_loss,
)
from spectral_training.models.mae import MaskedAutoencoderViT, build_mae
from spectral_training.models.pos_embed import spectral_spatial_pos_embed
from spectral_training.models.variants import MAE_VARIANTS, MAEVariant, count_parameters, mae_parameter_counts

__all__ = [
    "DEFAULT_LOSS_WEIGHTS",
    "DEFAULT_VALUE_RANGE",
    "LOSSES",
    "MAESpectralLoss",
    "MAEVariant",
    "MAE_VARIANTS",
    "MaskedAutoencoderViT",
    "build_mae",
    "count_parameters",
    "mae_parameter_counts",
    "mae_spectral_loss",
    "spectral_spatial_pos_embed",
]
