"""Time-series families: SITS-Former pretraining (``sits_pretrain``) and classification (``sits_former``)."""

from spectral_training.families.sits.family import SitsFormerFamily, SitsPretrainFamily

__all__ = ["SitsFormerFamily", "SitsPretrainFamily"]
