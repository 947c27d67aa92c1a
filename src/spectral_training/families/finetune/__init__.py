"""Fine-tuning (or linear probing) a classifier on our own spectral MAE encoder."""

from .family import FinetuneFamily, resolve_mae_checkpoint

__all__ = ["FinetuneFamily", "resolve_mae_checkpoint"]
