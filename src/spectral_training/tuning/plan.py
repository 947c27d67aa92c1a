"""A study's plan: the family, its parameters, the search space and the settings, checked together
before any data is read, and how one trial's values become the family's parameters."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from spectral_training import families
from spectral_training.training.config import TrainConfig
from spectral_training.tuning.settings import TuneSettings
from spectral_training.tuning.space import SearchSpace, TuneError, set_paths

# Keys that never change what a trial trains (as families.runs leaves them out of the run's name).
_VOLATILE = {"train": ("resume", "progress", "log_every_steps", "checkpoint_every_steps"), "loader": ("num_workers",)}


@dataclass
class StudyPlan:
    """Everything a study needs besides the data.

    block: the family's own block (its parameter file plus overrides), the trial epochs applied;
        each trial sets its sampled paths in it and resolves it over ``defaults``.
    params: the resolved parameters of the block alone (what the study starts from).
    """

    family: str
    dataset: str
    study_name: str
    settings: TuneSettings
    space: SearchSpace
    block: dict
    defaults: list[dict]
    params: dict
    monitor: str
    mode: str

    @property
    def direction(self) -> str:
        return "maximize" if self.mode == "max" else "minimize"

    @property
    def epochs(self) -> int:
        return int(self.params["train"]["epochs"])

    def trial_params(self, values: Mapping[str, Any]) -> dict:
        """The family's validated parameters with ``values`` (``{path: value}``) set."""
        return families.resolve(self.family, set_paths(self.block, values), *self.defaults)

    def definition(self) -> dict:
        """What makes two runs the same study: family, objective, space and starting parameters."""
        params = copy.deepcopy(self.params)
        params.pop("evaluation", None)
        for block, keys in _VOLATILE.items():
            for key in keys:
                params.get(block, {}).pop(key, None)
        return json.loads(json.dumps({"family": self.family, "dataset": self.dataset, "monitor": self.monitor,
                                      "mode": self.mode, **self.space.to_dict(), "params": params}, default=str))


def study_name_for(family: str, dataset: str) -> str:
    return f"{family}-{dataset}"


def plan_study(family: str, block: Mapping[str, Any] | None, defaults_by_name: Mapping[str, Mapping[str, Any] | None],
               search_space: Mapping[str, Any] | None, tune: Mapping[str, Any] | None, dataset: str) -> StudyPlan:
    """Check the family, its parameters, its search space and the settings together.

    Args:
        family: the family name (``--params family=``).
        block: the family's parameter block (top key ``<family>`` of its file).
        defaults_by_name: the default blocks by name (``training_defaults``, ``classifier_defaults``);
            the family says which of them it is merged over.
        search_space: the family's tuning block (top key ``tune_<family>``); None when it has none.
        tune: the ``tune`` settings.
        dataset: the dataset name (part of the study's name).
    Raises:
        TuneError: no search space, a malformed entry, a path the family does not read (naming the
            entry and the path), or a bad setting.
        FamilyParamsError: an unknown family or a bad key in its own block.
    """
    settings = TuneSettings.from_dict(tune)
    families.get_family(family)  # an unknown name fails here, with the list of families
    where = f"tune_{family}"
    if search_space is None:
        raise TuneError(f"the family '{family}' has no search space: add conf/base/parameters/tuning/{family}.yml "
                        f"with the top key '{where}' (see the other files there for the format)")
    space = SearchSpace.from_dict(search_space, where=f"{where} (conf/base/parameters/tuning/{family}.yml)")
    block = copy.deepcopy(dict(block or {}))
    if settings.epochs is not None:
        block = set_paths(block, {"train.epochs": settings.epochs})
    defaults = [copy.deepcopy(dict(defaults_by_name.get(name) or {})) for name in families.family_defaults(family)]
    params = families.resolve(family, block, *defaults)
    space.check_paths(block, lambda candidate: families.resolve(family, candidate, *defaults))
    for i, point in enumerate(settings.enqueue):
        unknown = [path for path in point if path not in space.paths]
        if unknown:
            raise TuneError(f"tune.enqueue[{i}]: {', '.join(map(repr, unknown))} is not a path of the search space "
                            f"tune_{family}; its paths: {', '.join(space.paths)}")
    config = TrainConfig.from_dict(params["train"], source=f"{family}.train")
    return StudyPlan(family=family, dataset=dataset, study_name=settings.study_name or study_name_for(family, dataset),
                     settings=settings, space=space, block=block, defaults=defaults, params=params,
                     monitor=config.monitor, mode=config.mode)

