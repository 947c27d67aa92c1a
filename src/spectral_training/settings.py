"""Project settings: hooks, configuration loading, and telemetry off."""

import os
import warnings

from kedro.config import OmegaConfigLoader

from spectral_training.hooks import DatasetNameHooks, MlflowRunHooks

# kedro-telemetry must never prompt or send anything from this project (also set in .telemetry).
os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")

# Third-party notices that say nothing about this project's run (kedro-mlflow imports mlflow's
# pyfunc, which warns about type hints; kedro registers resolvers through a deprecated call).
warnings.filterwarnings("ignore", message=".*type hints to the `predict` method.*")
warnings.filterwarnings("ignore", message=".*register_new_resolver.*")

HOOKS = (DatasetNameHooks(), MlflowRunHooks())

# kedro-telemetry is installed as a dependency of kedro-viz; its hooks stay off here.
DISABLE_HOOKS_FOR_PLUGINS = ("kedro-telemetry",)

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    "config_patterns": {
        "parameters": ["parameters*", "parameters*/**", "**/parameters*"],
        "globals": ["globals.yml"],
        "mlflow": ["mlflow*", "mlflow*/**", "**/mlflow*"],
    },
}
