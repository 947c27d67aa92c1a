"""Versioned artifacts: every rerun writes ``<filepath>/<version>/<file name>`` beside the old ones.

``VersionedArtifactDataset`` is kedro-mlflow's ``MlflowArtifactDataset`` (the file is also logged
to the active MLflow run) taking Kedro's ``versioned: true`` on the catalog entry itself:

    band_stats:
      type: spectral_training.io.VersionedArtifactDataset
      versioned: true
      artifact_path: data
      dataset: {type: json.JSONDataset, filepath: data/03_primary/<dataset>/band_stats.json}

Why not ``versioned: true`` inside ``dataset:``: kedro-mlflow builds the inner dataset without the
run's save version, so it stamps its own, and Kedro 1.x's catalog refuses a dataset whose save
version differs from the session's (``VersionAlreadyExistsError``). Here the inner dataset gets
the catalog's version, so every artifact of one ``kedro run`` shares one version string: the
session id, which MLflow records as the tag ``kedro_save_version``. Loading takes the newest
version unless ``--load-versions`` names one.

:func:`latest_version` finds the newest file of such an entry from outside Kedro (tests,
diagnostics, a manifest path given as a parameter).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kedro.io.core import Version
from kedro_mlflow.io.artifacts import MlflowArtifactDataset


class VersionedArtifactDataset(MlflowArtifactDataset):
    """An ``MlflowArtifactDataset`` whose wrapped file dataset is versioned with the catalog's version."""

    def __new__(cls, dataset: str | dict, run_id: str | None = None, artifact_path: str | None = None,
                credentials: dict[str, Any] | None = None, metadata: dict[str, Any] | None = None,
                version: Version | None = None):
        inner = {"type": dataset} if isinstance(dataset, str) else dict(dataset)
        inner["versioned"] = version is not None
        instance = super().__new__(cls, dataset=inner, run_id=run_id, artifact_path=artifact_path,
                                   credentials=credentials, metadata=metadata)
        if version is not None:
            if not hasattr(instance, "_version"):
                raise TypeError(f"{inner.get('type')} cannot be versioned (it is not an AbstractVersionedDataset); "
                                f"drop `versioned: true` from its catalog entry")
            instance._version = version  # the session's save version, not one of its own
            instance._clear_version_cache()
        return instance


def latest_version(path: str | Path) -> Path:
    """The newest version's file of a versioned entry's ``filepath``; the path itself when it holds
    no version (a plain file written before versioning, another folder, or nothing yet).

    Versions are Kedro timestamps (``2026-12-03T11.29.57.862Z``), which sort by time as text.
    """
    versions = all_versions(path)
    return versions[-1] if versions else Path(path)


def all_versions(path: str | Path) -> list[Path]:
    """Every version's file of a versioned entry's ``filepath``, oldest first."""
    path = Path(path)
    return sorted(p for p in path.glob(f"*/{path.name}") if p.is_file()) if path.is_dir() else []
