"""The classes a classifier learns: store labels -> contiguous class indices, names, weights.

Store labels are what ingestion wrote: an index into the store's class names for class
sub-folders, or the raw value of a per-pixel label map (majority class of the tile; 1..K), -1
for an unlabelled tile. A classifier needs classes 0..K-1, so the label space maps the values
present in the sample index to indices, keeps their names, and drops unlabelled samples.
With ``positive_class`` any labelled dataset becomes a binary task: that class (1) against
every other labelled class (0), e.g. water / flood against the rest.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from spectral_training.cubes.class_balance import class_counts, class_weights


@dataclass(frozen=True)
class LabelSpace:
    """``values[i]`` is the store label of class ``i``; ``names[i]`` its name."""

    values: tuple[int, ...]
    names: tuple[str, ...]
    positive_value: int | None = None  # binary task: the store label of the positive class

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def to_dict(self) -> dict:
        return {"values": list(self.values), "names": list(self.names), "positive_value": self.positive_value}

    @classmethod
    def from_dict(cls, raw: dict) -> "LabelSpace":
        return cls(tuple(int(v) for v in raw["values"]), tuple(raw["names"]), raw.get("positive_value"))

    def encode(self, labels: np.ndarray) -> np.ndarray:
        """Store labels -> class indices (-1 for unlabelled or unknown values)."""
        labels = np.asarray(labels, dtype=np.int64)
        if self.positive_value is not None:
            return np.where(labels < 0, -1, (labels == self.positive_value).astype(np.int64))
        lookup = {value: i for i, value in enumerate(self.values)}
        return np.array([lookup.get(int(v), -1) for v in labels], dtype=np.int64)


def _name_of(value: int, store_class_names: list[str], from_maps: bool) -> str:
    if not from_maps and 0 <= value < len(store_class_names):
        return str(store_class_names[value])
    return f"class_{value}"


def label_space(sample_index: pd.DataFrame, store_class_names: list[str], positive_class: str | int | None,
                *, where: str) -> LabelSpace:
    """The classes of the labelled samples (every split, so a class seen only in test is scored).

    Raises:
        ValueError: no labelled sample at all, fewer than two classes, or a ``positive_class``
            that names no class (the message lists them).
    """
    labels = sample_index["label"].to_numpy(dtype=np.int64)
    values = sorted(int(v) for v in np.unique(labels[labels >= 0]))
    if not values:
        raise ValueError(
            "the dataset has no labelled sample: put files in class sub-folders (data/01_raw/<dataset>/<class>/) "
            "or give a per-pixel label map (HDF5 `labels`), then rerun ingestion"
        )
    # Folder classes index the store's class names; label-map values are larger than that list.
    from_maps = not store_class_names or max(values) >= len(store_class_names)
    names = [_name_of(v, store_class_names, from_maps) for v in values]
    if positive_class is not None:
        positive = _find_class(positive_class, values, names, where=where)
        return LabelSpace((-1, positive), (f"not {names[values.index(positive)]}", names[values.index(positive)]),
                          positive_value=positive)
    if len(values) < 2:
        raise ValueError(f"the dataset has one class only ({names[0]}): a classifier needs two or more")
    return LabelSpace(tuple(values), tuple(names))


def _find_class(wanted: str | int, values: list[int], names: list[str], *, where: str) -> int:
    if isinstance(wanted, str) and wanted in names:
        return values[names.index(wanted)]
    if isinstance(wanted, int) and not isinstance(wanted, bool) and wanted in values:
        return wanted
    if isinstance(wanted, str) and wanted.lstrip("-").isdigit() and int(wanted) in values:
        return int(wanted)
    choices = ", ".join(f"{n} ({v})" for v, n in zip(values, names))
    raise ValueError(f"{where}: positive_class {wanted!r} is no class of this dataset; classes (label): {choices}")


def labelled_index(sample_index: pd.DataFrame, space: LabelSpace) -> pd.DataFrame:
    """The labelled rows, with ``label`` replaced by the class index."""
    encoded = space.encode(sample_index["label"].to_numpy())
    rows = sample_index.assign(label=encoded)
    return rows[rows["label"] >= 0].reset_index(drop=True)


def train_class_weights(index: pd.DataFrame, num_classes: int) -> list[float]:
    """``total / (classes x count)`` per class on the train split (0 for a class absent from it)."""
    train = index.loc[index["split"] == "train", "label"].to_numpy(dtype=np.int64)
    return [float(w) for w in class_weights(class_counts(train, num_classes))]
