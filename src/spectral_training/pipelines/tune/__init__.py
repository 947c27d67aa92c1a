"""tune: an Optuna study over a family's search space, each trial a nested MLflow run."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
