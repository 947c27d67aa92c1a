"""A family's parameters: its own block merged over the shared training defaults, every key checked.

Each family has one parameter file, ``conf/base/parameters/families/<family>.yml``, whose top key
is the family's name; ``training_defaults`` (``parameters_training_defaults.yml``) holds what the
families share. The resolved block is the deep merge of the two (the family wins; lists are
replaced, not merged), and a key that no part of the code reads is an error naming the key, where
it was found and the keys that are valid there, never silently ignored.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Iterable, Mapping
from typing import Any

from spectral_training.training.config import ConfigError, TrainConfig

# Blocks every family has; a family adds its own (e.g. a classifier's `labels`, `loss`, `mixup`).
COMMON_BLOCKS = ("model", "transforms", "loader", "train", "evaluation")
LOADER_KEYS = ("batch_size", "num_workers")
TRANSFORM_KEYS = ("train", "eval")


class FamilyParamsError(ConfigError):
    """A family parameter that is unknown, missing or of the wrong kind."""


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` over ``base``: nested mappings merge, anything else (lists too) is replaced."""
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def unknown_keys_error(where: str, unknown: Iterable[str], known: Iterable[str]) -> FamilyParamsError:
    """The error for keys nobody reads, with the closest valid key for each."""
    known = sorted(known)
    hints = []
    for key in unknown:
        close = difflib.get_close_matches(str(key), known, n=1)
        hints.append(f"'{key}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
    return FamilyParamsError(f"{where}: unknown key(s) {', '.join(hints)}; valid keys: {', '.join(known)}.")


def check_keys(block: Mapping[str, Any] | None, known: Iterable[str], where: str) -> None:
    known = set(known)
    unknown = [key for key in (block or {}) if key not in known]
    if unknown:
        raise unknown_keys_error(where, unknown, known)


def resolve_family_params(
    family: str,
    block: Mapping[str, Any] | None,
    *defaults: Mapping[str, Any] | None,
    extra_blocks: Iterable[str] = (),
    model_keys: Iterable[str] | None = None,
    evaluation_keys: Iterable[str] | None = None,
) -> dict[str, Any]:
    """The family's block merged over ``training_defaults``, with every key validated.

    Args:
        family: the family name (the top key of its parameter file), quoted in errors.
        block: that top key's value; None when the file (or the key) is missing.
        defaults: blocks merged under it, most general first (``training_defaults``, then e.g.
            ``classifier_defaults``).
        extra_blocks: blocks this family reads besides the common ones.
        model_keys / evaluation_keys: the keys its ``model`` / ``evaluation`` block may hold
            (None: not checked here, the family's builder checks them).
    Returns:
        The resolved parameters: ``model, transforms, loader, train, evaluation`` and the extra blocks.
    Raises:
        FamilyParamsError: a missing block, or an unknown key anywhere (the training settings
            through :class:`TrainConfig`, whose error names the closest valid key).
    """
    if block is None:
        raise FamilyParamsError(
            f"no parameters for the family '{family}': conf/base/parameters/families/{family}.yml must have "
            f"the top key '{family}'"
        )
    if not isinstance(block, Mapping):
        raise FamilyParamsError(f"{family}: expected a mapping of blocks ({', '.join(COMMON_BLOCKS)}), got {block!r}")
    resolved: dict[str, Any] = {}
    for layer in (*defaults, block):
        resolved = deep_merge(resolved, layer or {})
    blocks = (*COMMON_BLOCKS, *extra_blocks)
    check_keys(resolved, blocks, f"{family}")
    for name in blocks:
        resolved.setdefault(name, {})
        if resolved[name] is None and name in extra_blocks:
            continue  # an optional block switched off with null (e.g. mixup: null)
        if not isinstance(resolved[name], Mapping):
            raise FamilyParamsError(f"{family}.{name}: expected a mapping, got {resolved[name]!r}")
    check_keys(resolved["loader"], LOADER_KEYS, f"{family}.loader")
    check_keys(resolved["transforms"], TRANSFORM_KEYS, f"{family}.transforms")
    if model_keys is not None:
        check_keys(resolved["model"], model_keys, f"{family}.model")
    if evaluation_keys is not None:
        check_keys(resolved["evaluation"], evaluation_keys, f"{family}.evaluation")
    TrainConfig.from_dict(resolved["train"], source=f"{family}.train")  # raises on an unknown or bad setting
    return resolved
