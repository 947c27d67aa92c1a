"""Project settings: hooks, configuration loading, and telemetry off."""

import os

from kedro.config import OmegaConfigLoader

from spectral_training.hooks import DatasetNameHooks

# kedro-telemetry must never prompt or send anything from this project (also set in .telemetry).
os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")

HOOKS = (DatasetNameHooks(),)

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
