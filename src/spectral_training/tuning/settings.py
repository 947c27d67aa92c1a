"""The study's settings (``tune`` in ``conf/base/parameters_tune.yml``): trials, budget, sampler,
pruner and storage, every key checked; and the Optuna objects they describe."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from spectral_training.families.params import unknown_keys_error
from spectral_training.tuning.space import TuneError

SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "hyperband", "none")


def _fields(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _check_keys(raw: Mapping[str, Any], cls, where: str) -> None:
    unknown = [key for key in raw if key not in _fields(cls)]
    if unknown:
        raise TuneError(str(unknown_keys_error(where, unknown, _fields(cls))))


def _int(where: str, value: Any, minimum: int, optional: bool = False) -> int | None:
    if optional and value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise TuneError(f"{where}: expected an integer >= {minimum}{' or null' if optional else ''}, got {value!r}")
    return value


@dataclass
class SamplerSettings:
    name: str = "tpe"  # tpe (Bayesian, the default) | random
    seed: int | None = 42  # null = unseeded; each `kedro run` adds the study's trial count to it
    n_startup_trials: int = 10  # tpe: random trials before the model of good/bad regions is used
    multivariate: bool = False  # tpe: model the parameters jointly

    def build(self, trials_so_far: int) -> optuna.samplers.BaseSampler:
        """The sampler; its seed moves on with the study so a resumed study does not redraw old points."""
        seed = None if self.seed is None else self.seed + trials_so_far
        if self.name == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=self.n_startup_trials,
                                          multivariate=self.multivariate)


@dataclass
class PrunerSettings:
    name: str = "median"  # median | hyperband | none
    n_startup_trials: int = 5  # median: trials that finish before any is pruned
    n_warmup_steps: int = 2  # median: epochs every trial trains before it can be pruned
    min_resource: int = 1  # hyperband: epochs of the smallest budget
    reduction_factor: int = 3  # hyperband: 1 / share of trials promoted to the next budget

    def build(self, epochs: int) -> optuna.pruners.BasePruner:
        """The pruner; Hyperband's largest budget is the trial's epoch count."""
        if self.name == "none":
            return optuna.pruners.NopPruner()
        if self.name == "hyperband":
            return optuna.pruners.HyperbandPruner(min_resource=self.min_resource, max_resource=max(epochs, self.min_resource),
                                                  reduction_factor=self.reduction_factor)
        return optuna.pruners.MedianPruner(n_startup_trials=self.n_startup_trials, n_warmup_steps=self.n_warmup_steps)


@dataclass
class TuneSettings:
    """What a `kedro run --pipeline tune` does; see parameters_tune.yml for each key."""

    n_trials: int = 20
    timeout: float | None = None
    epochs: int | None = None
    storage: str = "sqlite:///data/07_model_output/optuna.db"
    study_name: str | None = None
    sampler: SamplerSettings = field(default_factory=SamplerSettings)
    pruner: PrunerSettings = field(default_factory=PrunerSettings)
    heartbeat_interval: int | None = 60
    grace_period: int | None = None
    retry_interrupted: int = 1
    log_checkpoints: bool = False
    enqueue: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any] | None, where: str = "tune") -> "TuneSettings":
        """Check every key and value of the ``tune`` block.

        Raises:
            TuneError: an unknown key (with the closest valid one) or a bad value, naming ``tune.<key>``.
        """
        raw = dict(raw or {})
        _check_keys(raw, cls, where)
        sampler, pruner = dict(raw.pop("sampler", None) or {}), dict(raw.pop("pruner", None) or {})
        _check_keys(sampler, SamplerSettings, f"{where}.sampler")
        _check_keys(pruner, PrunerSettings, f"{where}.pruner")
        settings = cls(**raw, sampler=SamplerSettings(**sampler), pruner=PrunerSettings(**pruner))
        settings._validate(where)
        return settings

    def _validate(self, where: str) -> None:
        _int(f"{where}.n_trials", self.n_trials, 1)
        if self.timeout is not None and (isinstance(self.timeout, bool) or not isinstance(self.timeout, (int, float))
                                         or not math.isfinite(self.timeout) or self.timeout <= 0):
            raise TuneError(f"{where}.timeout: expected seconds > 0 or null, got {self.timeout!r}")
        _int(f"{where}.epochs", self.epochs, 1, optional=True)
        if not isinstance(self.storage, str) or not self.storage.strip():
            raise TuneError(f"{where}.storage: expected a database URL such as sqlite:///data/07_model_output/"
                            f"optuna.db or postgresql://user:password@host/db, got {self.storage!r}")
        if self.study_name is not None and (not isinstance(self.study_name, str) or not self.study_name.strip()):
            raise TuneError(f"{where}.study_name: expected a name or null, got {self.study_name!r}")
        _int(f"{where}.heartbeat_interval", self.heartbeat_interval, 1, optional=True)
        _int(f"{where}.grace_period", self.grace_period, 1, optional=True)
        _int(f"{where}.retry_interrupted", self.retry_interrupted, 0)
        if not isinstance(self.log_checkpoints, bool):
            raise TuneError(f"{where}.log_checkpoints: expected true or false, got {self.log_checkpoints!r}")
        if not isinstance(self.enqueue, (list, tuple)) or not all(isinstance(p, Mapping) for p in self.enqueue):
            raise TuneError(f"{where}.enqueue: expected a list of points {{path: value}}, e.g. "
                            f"[{{train.lr: 1.0e-3}}], got {self.enqueue!r}")
        self.enqueue = [dict(point) for point in self.enqueue]
        if self.sampler.name not in SAMPLERS:
            raise TuneError(f"{where}.sampler.name: expected one of {', '.join(SAMPLERS)}, got {self.sampler.name!r}")
        _int(f"{where}.sampler.seed", self.sampler.seed, 0, optional=True)
        _int(f"{where}.sampler.n_startup_trials", self.sampler.n_startup_trials, 0)
        if self.pruner.name not in PRUNERS:
            raise TuneError(f"{where}.pruner.name: expected one of {', '.join(PRUNERS)}, got {self.pruner.name!r}")
        for key in ("n_startup_trials", "n_warmup_steps"):
            _int(f"{where}.pruner.{key}", getattr(self.pruner, key), 0)
        _int(f"{where}.pruner.min_resource", self.pruner.min_resource, 1)
        _int(f"{where}.pruner.reduction_factor", self.pruner.reduction_factor, 2)

    def storage_url(self) -> str:
        """The storage as a database URL (a bare path is a SQLite file relative to the working folder)."""
        url = self.storage.strip()
        return url if "://" in url else f"sqlite:///{url}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def sqlite_file(url: str) -> Path | None:
    """The database file of a SQLite URL (None for other databases and in-memory SQLite)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if not parsed.drivername.startswith("sqlite") or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def redacted(url: str) -> str:
    """The URL with its password hidden, fit for reports and logs."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy knows: say nothing of it
        return "<unparsable storage URL>"
