"""A family's search space: named dimensions, each a parameter path inside the family's block.

A space comes from ``conf/base/parameters/tuning/<family>.yml`` (top key ``tune_<family>``)::

    tune_vit:
      space:
        lr: {path: train.lr, type: float, low: 1.0e-5, high: 1.0e-3, log: true}
        depth: {path: model.kwargs.depth, type: int, low: 2, high: 12, step: 2}
        smoothing: {path: loss.label_smoothing, type: categorical, choices: [0.0, 0.1]}

The entry's name is its label in overrides and errors; the Optuna parameter is the path, so the
report, the plots and the best-parameters file say which parameter each value sets.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from spectral_training.families.params import unknown_keys_error
from spectral_training.training.config import ConfigError

TYPES = ("float", "int", "categorical")
_KEYS = {
    "float": ("path", "type", "low", "high", "log", "step"),
    "int": ("path", "type", "low", "high", "log", "step"),
    "categorical": ("path", "type", "choices"),
}
_SCALARS = (type(None), bool, int, float, str)


class TuneError(ConfigError):
    """A search space or a tuning setting that is wrong; the message names the entry and the fix."""


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Dimension:
    """One searched parameter: its path inside the family's block and its distribution."""

    name: str
    path: str
    type: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] = ()

    @classmethod
    def from_dict(cls, name: str, raw: Any, where: str) -> "Dimension":
        """Parse and check one entry; ``where`` (e.g. ``tune_vit.space.lr``) is quoted in errors."""
        if not isinstance(raw, Mapping):
            raise TuneError(f"{where}: expected a mapping like {{path: train.lr, type: float, low: 1.0e-5, "
                            f"high: 1.0e-2, log: true}}, got {raw!r}")
        kind = raw.get("type")
        if kind not in TYPES:
            raise TuneError(f"{where}.type: expected one of {', '.join(TYPES)}, got {kind!r}")
        unknown = [key for key in raw if key not in _KEYS[kind]]
        if unknown:
            raise TuneError(str(unknown_keys_error(f"{where} ({kind})", unknown, _KEYS[kind])))
        path = raw.get("path")
        if not isinstance(path, str) or not all(part.strip() for part in path.split(".")) or "." not in path:
            raise TuneError(f"{where}.path: expected a parameter path inside the family's block such as "
                            f"'train.lr' or 'model.kwargs.depth', got {path!r}")
        if kind == "categorical":
            choices = raw.get("choices")
            if not isinstance(choices, (list, tuple)) or not choices:
                raise TuneError(f"{where}.choices: expected a non-empty list, got {choices!r}")
            bad = [c for c in choices if not isinstance(c, _SCALARS)]
            if bad:
                raise TuneError(f"{where}.choices: Optuna takes numbers, strings, booleans or null as choices, "
                                f"got {bad[0]!r}; search over a list-valued parameter with one entry per element")
            return cls(name, path, kind, choices=tuple(choices))
        low, high, step, log = raw.get("low"), raw.get("high"), raw.get("step"), raw.get("log", False)
        for key, value in (("low", low), ("high", high)):
            if not _is_number(value) or (kind == "int" and not isinstance(value, int)):
                raise TuneError(f"{where}.{key}: expected {'an integer' if kind == 'int' else 'a number'}, got {value!r}")
        if low > high:
            raise TuneError(f"{where}: low ({low}) is above high ({high})")
        if not isinstance(log, bool):
            raise TuneError(f"{where}.log: expected true or false, got {log!r}")
        if log and low <= 0:
            raise TuneError(f"{where}: a log scale needs low > 0, got {low}")
        if step is not None:
            if log:
                raise TuneError(f"{where}: step and log cannot be combined (Optuna); drop one of them")
            if not _is_number(step) or step <= 0 or (kind == "int" and not isinstance(step, int)):
                raise TuneError(f"{where}.step: expected a positive {'integer' if kind == 'int' else 'number'}, "
                                f"got {step!r}")
        if kind == "float":
            return cls(name, path, kind, float(low), float(high), log, None if step is None else float(step))
        return cls(name, path, kind, int(low), int(high), log, step)

    def suggest(self, trial: Any) -> Any:
        """The trial's value of this dimension (Optuna's ``suggest_*``, keyed by the path)."""
        if self.type == "categorical":
            return trial.suggest_categorical(self.path, list(self.choices))
        if self.type == "int":
            return trial.suggest_int(self.path, self.low, self.high, step=self.step or 1, log=self.log)
        return trial.suggest_float(self.path, self.low, self.high, step=self.step, log=self.log)

    def probe(self) -> Any:
        """A value inside the space (the first choice, or low) used for checks before the study."""
        return self.choices[0] if self.type == "categorical" else self.low

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k in _KEYS[self.type]}
        if self.type == "categorical":
            out["choices"] = list(self.choices)
        return {k: v for k, v in out.items() if v is not None and (k != "log" or v)}


@dataclass(frozen=True)
class SearchSpace:
    """The dimensions of one family's study, in file order."""

    dimensions: tuple[Dimension, ...]
    where: str = "search space"

    @classmethod
    def from_dict(cls, raw: Any, where: str) -> "SearchSpace":
        """Parse ``{space: {name: entry, ...}}``; ``where`` names the top key (``tune_vit``) in errors."""
        if not isinstance(raw, Mapping):
            raise TuneError(f"{where}: expected a mapping with the key 'space', got {raw!r}")
        if set(raw) != {"space"}:
            unknown = [key for key in raw if key != "space"]
            if unknown:
                raise TuneError(str(unknown_keys_error(where, unknown, ["space"])))
            raise TuneError(f"{where}: the key 'space' is missing (name: {{path, type, ...}} entries)")
        entries = raw["space"]
        if not isinstance(entries, Mapping) or not entries:
            raise TuneError(f"{where}.space: expected a non-empty mapping of name -> {{path, type, ...}}, got {entries!r}")
        dimensions = [Dimension.from_dict(str(name), entry, f"{where}.space.{name}") for name, entry in entries.items()]
        seen: dict[str, str] = {}
        for dim in dimensions:
            if dim.path in seen:
                raise TuneError(f"{where}.space: '{seen[dim.path]}' and '{dim.name}' both set {dim.path}; keep one")
            seen[dim.path] = dim.name
        return cls(tuple(dimensions), where)

    @property
    def paths(self) -> list[str]:
        return [dim.path for dim in self.dimensions]

    def sample(self, trial: Any) -> dict[str, Any]:
        """``{path: value}`` for one Optuna trial."""
        return {dim.path: dim.suggest(trial) for dim in self.dimensions}

    def probe(self) -> dict[str, Any]:
        return {dim.path: dim.probe() for dim in self.dimensions}

    def to_dict(self) -> dict[str, Any]:
        return {"space": {dim.name: dim.to_dict() for dim in self.dimensions}}

    def check_paths(self, block: Mapping[str, Any], resolve: Callable[[dict], dict]) -> None:
        """Every path is a parameter the family reads: set alone to its probe value, ``resolve``
        (the family's parameter check) accepts it and the resolved block holds the value there.

        Raises:
            TuneError: naming the entry, its path and the family check's reason.
        """
        for dim in self.dimensions:
            value = dim.probe()
            try:
                resolved = resolve(set_paths(block, {dim.path: value}))
            except (ConfigError, ValueError, TypeError) as error:
                raise TuneError(f"{self.where}.space.{dim.name}: the path '{dim.path}' is not a parameter the "
                                f"family reads ({error}); fix the path in the search space") from error
            if get_path(resolved, dim.path) != value:
                raise TuneError(f"{self.where}.space.{dim.name}: setting '{dim.path}' does not reach the resolved "
                                f"parameters; fix the path in the search space")


def set_paths(block: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``block`` with each dotted path set (missing mappings on the way are created)."""
    out = copy.deepcopy(dict(block or {}))
    for path, value in values.items():
        node = out
        parts = path.split(".")
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                where = ".".join(parts[: depth + 1])
                raise TuneError(f"cannot set '{path}': '{where}' holds {child!r}, not a mapping")
            node = child
        node[parts[-1]] = copy.deepcopy(value)
    return out


def get_path(params: Mapping[str, Any], path: str, default: Any = None) -> Any:
    node: Any = params
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


def nested(values: Mapping[str, Any]) -> dict[str, Any]:
    """``{"train.lr": 1e-3}`` -> ``{"train": {"lr": 1e-3}}``."""
    return set_paths({}, values)
