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
from spectral_training.models.mae_classifier import (
    MAEEncoderClassifier,
    checkpoint_band_stats_for_dataset,
    interpolate_pos_embed,
    mae_classifier_from_checkpoint,
)
from spectral_training.models.pos_embed import spectral_spatial_pos_embed
from spectral_training.models.variants import MAE_VARIANTS, MAEVariant, count_parameters, mae_parameter_counts

__all__ = [
    "DEFAULT_LOSS_WEIGHTS",
    "DEFAULT_VALUE_RANGE",
    "LOSSES",
    "MAEEncoderClassifier",
    "MAESpectralLoss",
    "MAEVariant",
    "MAE_VARIANTS",
    "MaskedAutoencoderViT",
    "build_mae",
    "checkpoint_band_stats_for_dataset",
    "count_parameters",
    "interpolate_pos_embed",
    "mae_classifier_from_checkpoint",
    "mae_parameter_counts",
    "mae_spectral_loss",
    "spectral_spatial_pos_embed",
]

# Supervised classifiers by name (timm, our small CNNs, torchvision ViT) and weights-file fitting.
from spectral_training.models.classifiers import TORCHVISION_VITS, TorchvisionViT, build_classifier, model_input_size
from spectral_training.models.input_adaptation import (
    ADAPTATION_METHODS,
    DEFAULT_WEIGHTS_WAVELENGTHS_NM,
    load_weights_file,
    wavelength_channel_map,
)

__all__ += [
    "ADAPTATION_METHODS",
    "DEFAULT_WEIGHTS_WAVELENGTHS_NM",
    "TORCHVISION_VITS",
    "TorchvisionViT",
    "build_classifier",
    "load_weights_file",
    "model_input_size",
    "wavelength_channel_map",
]
