"""The search space from conf: Optuna distributions, paths checked against the family, errors that name the entry."""

import re

import optuna
import pytest
from tune_data import TUNING_CONF, family_space, tiny_plan

from spectral_training import families
from spectral_training.tuning import SearchSpace, TuneError
from spectral_training.tuning.space import set_paths


def test_each_entry_type_becomes_the_optuna_distribution_it_names():
    space = SearchSpace.from_dict({"space": {
        "lr": {"path": "train.lr", "type": "float", "low": 1e-5, "high": 1e-2, "log": True},
        "drop": {"path": "model.drop_rate", "type": "float", "low": 0.0, "high": 0.5, "step": 0.1},
        "depth": {"path": "model.kwargs.depth", "type": "int", "low": 2, "high": 12, "step": 2},
        "opt": {"path": "train.optimizer", "type": "categorical", "choices": ["adam", "sgd"]},
    }}, where="tune_x")
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    values = space.sample(trial)
    assert trial.distributions == {
        "train.lr": optuna.distributions.FloatDistribution(1e-5, 1e-2, log=True),
        "model.drop_rate": optuna.distributions.FloatDistribution(0.0, 0.5, step=0.1),
        "model.kwargs.depth": optuna.distributions.IntDistribution(2, 12, step=2),
        "train.optimizer": optuna.distributions.CategoricalDistribution(["adam", "sgd"]),
    }
    assert set(values) == set(trial.distributions) and values["train.optimizer"] in ("adam", "sgd")


def test_a_misspelt_path_stops_the_plan_naming_the_entry_the_path_and_the_close_key(tmp_path):
    space = {"space": {"lr": {"path": "train.lrr", "type": "float", "low": 1e-4, "high": 1e-2, "log": True}}}
    with pytest.raises(TuneError) as error:
        tiny_plan(tmp_path, space)
    message = str(error.value)
    assert "tune_satellite_cnn" in message and "space.lr" in message and "'train.lrr'" in message
    assert "did you mean 'lr'" in message


@pytest.mark.parametrize("entry, expected", [
    ({"path": "train.lr", "type": "float", "lo": 1e-4, "high": 1e-2}, "did you mean 'low'"),
    ({"path": "train.lr", "type": "float", "low": 1e-2, "high": 1e-4}, "low (0.01) is above high"),
    ({"path": "train.lr", "type": "float", "low": 0.0, "high": 1e-2, "log": True}, "log scale needs low > 0"),
    ({"path": "train.lr", "type": "uniform", "low": 0.0, "high": 1.0}, "space.lr.type: expected one of float, int"),
    ({"path": "lr", "type": "float", "low": 0.0, "high": 1.0}, "space.lr.path"),
    ({"path": "train.epochs", "type": "int", "low": 1.5, "high": 4}, "space.lr.low: expected an integer"),
])
def test_a_malformed_entry_names_its_field(entry, expected):
    with pytest.raises(TuneError, match=re.escape(expected)):
        SearchSpace.from_dict({"space": {"lr": entry}}, where="tune_x")


def test_every_tuning_file_is_a_space_of_a_registered_family(tmp_path):
    files = sorted(path.stem for path in TUNING_CONF.glob("*.yml"))
    assert {"mae", "cnn", "vit", "swin", "eva02", "sits_former"} <= set(files)
    registered = set(families.family_names())
    assert [name for name in files if name not in registered] == []
    for name in files:
        plan = tiny_plan(tmp_path, family_space(name), family=name)  # raises if a path is not the family's
        assert plan.space.paths and plan.study_name == f"{name}-tiny"


def test_an_enqueued_point_outside_the_space_paths_is_an_error_naming_the_path(tmp_path):
    with pytest.raises(TuneError, match=r"tune.enqueue\[0\]: 'train.momentum'"):
        tiny_plan(tmp_path, enqueue=[{"train.momentum": 0.9}])


def test_set_paths_creates_missing_mappings_and_leaves_the_block_unchanged():
    block = {"train": {"lr": 1e-3}, "mixup": None}
    out = set_paths(block, {"train.lr": 1e-2, "model.kwargs.depth": 4, "mixup.mixup_alpha": 0.2})
    assert out == {"train": {"lr": 1e-2}, "model": {"kwargs": {"depth": 4}}, "mixup": {"mixup_alpha": 0.2}}
    assert block == {"train": {"lr": 1e-3}, "mixup": None}
