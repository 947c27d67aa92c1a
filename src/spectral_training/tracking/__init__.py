"""Experiment tracking with MLflow: the engine's callback, run markers for resume, tags.

The training engine never imports MLflow; it calls :class:`MlflowTrainingCallback` through its
callback interface, and only on the process that owns the run (rank 0).
"""

from .mlflow_callback import MlflowTrainingCallback, active_run_id
from .run_marker import find_marker, read_markers, remove_marker, write_marker
from .tags import git_commit

__all__ = ["MlflowTrainingCallback", "active_run_id", "find_marker", "git_commit", "read_markers", "remove_marker",
           "write_marker"]

from .nested import MlflowTrialTracker, TrialTrainingCallback, end_interrupted_runs, set_run_tags  # noqa: E402

__all__ += ["MlflowTrialTracker", "TrialTrainingCallback", "end_interrupted_runs", "set_run_tags"]
