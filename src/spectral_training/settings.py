"""Project settings: hooks, configuration loading, and telemetry off."""

import os
import warnings
from pathlib import Path

from kedro.config import OmegaConfigLoader

from spectral_training.hooks import DatasetLockHooks, MlflowRunHooks, MlflowTagHooks, ParameterHooks, ProvenanceHooks

# kedro-telemetry must never prompt or send anything from this project (also set in .telemetry).
os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")

# Third-party notices that say nothing about this project's run (kedro-mlflow imports mlflow's
# pyfunc, which warns about type hints; kedro registers resolvers through a deprecated call).
warnings.filterwarnings("ignore", message=".*type hints to the `predict` method.*")
warnings.filterwarnings("ignore", message=".*register_new_resolver.*")

HOOKS = (ParameterHooks(), MlflowRunHooks(), MlflowTagHooks(), ProvenanceHooks(), DatasetLockHooks())

# kedro-telemetry is installed as a dependency of kedro-viz; its hooks stay off here.
DISABLE_HOOKS_FOR_PLUGINS = ("kedro-telemetry",)

def _project_root() -> str:
    """The nearest folder above the working directory whose pyproject.toml is a Kedro project's.

    Lets configuration name files in the project (the MLflow SQLite store) from wherever Kedro
    is started: a notebook in notebooks/ must not grow a second tracking store.
    """
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        candidate = folder / "pyproject.toml"
        if candidate.is_file() and "[tool.kedro]" in candidate.read_text(errors="ignore"):
            return folder.as_posix()
    return here.as_posix()


CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    "custom_resolvers": {"project_root": _project_root},
    # conf/local/parameters.yml may override one nested key (mae.train.epochs) without restating its block.
    "merge_strategy": {"parameters": "soft"},
    "config_patterns": {
        "parameters": ["parameters*", "parameters*/**", "**/parameters*"],
        "globals": ["globals.yml"],
        "mlflow": ["mlflow*", "mlflow*/**", "**/mlflow*"],
    },
}
