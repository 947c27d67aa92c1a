"""The convolutional families: U-Net masked image modelling (``unet_mim``), segmentation (``unet_seg``)."""

from .mim import UNetMIMFamily, build_mim_model
from .seg import UNetSegFamily

__all__ = ["UNetMIMFamily", "UNetSegFamily", "build_mim_model"]
