"""Tiny studies: the satellite_cnn family on a tiny labelled store, trials of 2 epochs in a fraction of a second."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml
from family_data import PROJECT_ROOT, family_layers, tiny_overrides

from spectral_training import tuning
from spectral_training.families.params import deep_merge

TUNING_CONF = PROJECT_ROOT / "conf" / "base" / "parameters" / "tuning"

# lr decides everything on the tiny store: 1e-2 separates the classes in an epoch, 1e-7 never does.
GOOD, HOPELESS = 1e-2, 1e-7
SPACE = {"space": {
    "lr": {"path": "train.lr", "type": "float", "low": 1e-7, "high": 1e-1, "log": True},
    "optimizer": {"path": "train.optimizer", "type": "categorical", "choices": ["adam", "no_such_optimizer"]},
}}


def family_space(family: str) -> dict:
    """The search space block of the project's conf file for ``family``."""
    return yaml.safe_load((TUNING_CONF / f"{family}.yml").read_text())[f"tune_{family}"]


def tiny_plan(folder: Path, space: dict | None = None, family: str = "satellite_cnn", **tune) -> tuning.StudyPlan:
    """A plan on the project's parameter files with a tiny model, 2 epochs and a SQLite storage in ``folder``."""
    block, defaults = family_layers(family, tiny_overrides(family))
    settings = deep_merge({"n_trials": 2, "epochs": 2, "storage": f"sqlite:///{folder / 'optuna.db'}",
                           "heartbeat_interval": None}, tune)
    return tuning.plan_study(family, block, {"training_defaults": defaults[0],
                                             "classifier_defaults": defaults[-1] if len(defaults) > 1 else {}},
                             copy.deepcopy(space if space is not None else SPACE), settings, "tiny")
