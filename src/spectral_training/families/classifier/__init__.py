"""Supervised classifier families (timm CNNs and transformers, torchvision's ViT, small CNNs)."""

from .family import ClassifierFamily

__all__ = ["ClassifierFamily"]
