"""The template of every family's stage (validation, training, evaluation)."""

from .pipeline import (
    CLASSIFY,
    FINETUNE,
    MAE,
    SITS,
    SITS_PRETRAIN,
    STAGES,
    UNET_MIM,
    UNET_SEG,
    UNET_TEMPORAL,
    Stage,
    create_pipeline,
    stage_of,
    trained_family,
)

__all__ = ["CLASSIFY", "FINETUNE", "MAE", "SITS", "SITS_PRETRAIN", "STAGES", "Stage", "UNET_MIM", "UNET_SEG",
           "UNET_TEMPORAL", "create_pipeline", "stage_of", "trained_family"]
