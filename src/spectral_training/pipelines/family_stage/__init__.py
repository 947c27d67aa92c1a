"""The template of every family's stage (validation, training, evaluation)."""

from .pipeline import CLASSIFY, FINETUNE, MAE, STAGES, UNET_MIM, UNET_SEG, UNET_TEMPORAL, Stage, create_pipeline, stage_of, trained_family

__all__ = ["CLASSIFY", "FINETUNE", "MAE", "STAGES", "Stage", "UNET_MIM", "UNET_SEG", "UNET_TEMPORAL", "create_pipeline", "stage_of", "trained_family"]
