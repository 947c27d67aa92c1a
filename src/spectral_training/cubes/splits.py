"""Train/val/test assignment as a pure function of the sample id."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

SPLITS = ("train", "val", "test")


def validate_fractions(fractions: Mapping[str, float]) -> dict[str, float]:
    unknown = set(fractions) - set(SPLITS)
    if unknown:
        raise ValueError(f"split fractions: unknown split(s) {sorted(unknown)}; use train, val, test")
    values = {name: float(fractions.get(name, 0.0)) for name in SPLITS}
    if any(v < 0 for v in values.values()) or abs(sum(values.values()) - 1.0) > 1e-6:
        raise ValueError(f"split fractions {values} must be >= 0 and add up to 1")
    return values


def split_of(sample_id: str, fractions: Mapping[str, float]) -> str:
    """The split a sample belongs to, from a hash of its id alone.

    Adding files never moves an existing sample: its id, and so its hash, does not change.
    """
    digest = hashlib.sha256(sample_id.encode()).digest()
    position = int.from_bytes(digest[:8], "big") / 2**64
    cumulative = 0.0
    for name in SPLITS:
        cumulative += fractions.get(name, 0.0)
        if position < cumulative:
            return name
    return SPLITS[-1] if fractions.get(SPLITS[-1], 0.0) > 0 else max(fractions, key=fractions.get)
