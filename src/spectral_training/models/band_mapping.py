"""Which dataset band feeds which band of a pretrained checkpoint, and the statistics that follow.

A checkpoint's model takes its bands in its own order. A dataset with other bands, or the same
bands in another order, is fed through a band index (one dataset channel per checkpoint band,
-1 for a band the dataset lacks) resolved here from band names and an optional mapping.
"""

from __future__ import annotations

import operator
from typing import Any, Mapping, Sequence

__all__ = ["check_band_index", "checkpoint_band_stats_for_dataset", "resolve_band_index"]


def check_band_index(index: list[int], num_bands: int, num_input_bands: int | None) -> list[int]:
    if len(index) != num_bands:
        raise ValueError(f"band_mapping list has {len(index)} entries but the checkpoint has {num_bands} bands; "
                         "give one dataset band index per checkpoint band, in checkpoint order (-1 = missing)")
    top = num_input_bands if num_input_bands is not None else float("inf")
    bad = [(k, j) for k, j in enumerate(index) if not isinstance(j, int) or not -1 <= j < top]
    if bad:
        raise ValueError(f"band_mapping list: entries {bad} (position, value) are not dataset band indices in "
                         f"[-1, {num_input_bands}); use -1 for a checkpoint band the dataset lacks")
    if all(j == -1 for j in index):
        raise ValueError("band_mapping maps no checkpoint band to a dataset band (all -1); map at least one")
    used = [j for j in index if j >= 0]
    twice = sorted({j for j in used if used.count(j) > 1})
    if twice:
        raise ValueError(f"band_mapping feeds dataset band(s) {twice} to several checkpoint bands; each dataset band "
                         "is normalised with one checkpoint band's statistics, so map it once (-1 for the others)")
    return index


def _mismatch_message(ckpt_bands: list[str], dataset_bands: list[str]) -> str:
    diffs = [f"position {i}: checkpoint {a!r} vs dataset {b!r}"
             for i, (a, b) in enumerate(zip(ckpt_bands, dataset_bands)) if a != b][:4]
    if len(ckpt_bands) != len(dataset_bands):
        diffs.append(f"{len(ckpt_bands)} vs {len(dataset_bands)} bands")
    message = (f"dataset_band_names differ from the checkpoint's bands (the model's channels, in its order):\n"
               f"  checkpoint ({len(ckpt_bands)}): {ckpt_bands}\n  dataset    ({len(dataset_bands)}): {dataset_bands}\n"
               f"  first differences: {'; '.join(diffs)}\n"
               "Pass band_mapping={checkpoint_band: dataset_band, ...} (None for a band the dataset lacks, fed as zeros; "
               "unmentioned bands are matched by name) or a list of dataset band indices, one per checkpoint band "
               "(-1 = missing)")
    if set(ckpt_bands) <= set(dataset_bands):
        message += "; every checkpoint band is in the dataset, so band_mapping={b: b for b in checkpoint bands} works"
    return message


def resolve_band_index(
    ckpt_bands: list[str] | None,
    dataset_bands: list[str] | None,
    mapping: Mapping[str, str | None] | Sequence[int] | None,
    num_bands: int,
) -> list[int] | None:
    """Input channel per checkpoint band (-1 missing), or None when the input is the checkpoint's bands."""
    if mapping is None:
        if dataset_bands is None:
            return None
        if ckpt_bands is None:
            if len(dataset_bands) != num_bands:
                raise ValueError(f"the checkpoint records no band names and has {num_bands} bands, the dataset "
                                 f"{len(dataset_bands)}: {dataset_bands}; pass band_mapping as a list of dataset "
                                 "band indices, one per checkpoint band (-1 = missing)")
            return None
        if list(dataset_bands) != list(ckpt_bands):
            raise ValueError(_mismatch_message(list(ckpt_bands), list(dataset_bands)))
        return None
    if not isinstance(mapping, Mapping):
        index = [operator.index(j) if hasattr(j, "__index__") else j for j in mapping]  # numpy ints too
        return check_band_index(index, num_bands, None if dataset_bands is None else len(dataset_bands))
    if ckpt_bands is None or dataset_bands is None:
        raise ValueError("band_mapping as a {checkpoint_band: dataset_band} dict needs band names on both sides: "
                         f"checkpoint band_names={ckpt_bands}, dataset_band_names={dataset_bands}; pass "
                         "dataset_band_names, or band_mapping as a list of dataset band indices")
    unknown = [k for k in mapping if k not in ckpt_bands]
    absent = [v for v in mapping.values() if v is not None and v not in dataset_bands]
    if unknown or absent:
        raise ValueError(f"band_mapping: keys {unknown} are not checkpoint bands {list(ckpt_bands)}; values {absent} "
                         f"are not dataset bands {list(dataset_bands)}")
    unmatched = [b for b in ckpt_bands if b not in mapping and b not in dataset_bands]
    if unmatched:
        raise ValueError(f"band_mapping does not say which dataset band feeds checkpoint band(s) {unmatched} and the "
                         f"dataset has none of that name ({list(dataset_bands)}); map them, or map them to None "
                         "to feed zeros (the normalised mean)")
    targets = [mapping.get(band, band) for band in ckpt_bands]  # unmentioned: the band of the same name
    index = [-1 if target is None else dataset_bands.index(target) for target in targets]
    return check_band_index(index, num_bands, len(dataset_bands))


def checkpoint_band_stats_for_dataset(info: Mapping[str, Any]) -> dict[str, list[float]]:
    """The checkpoint's per-band mean and std in the order of the classifier's *input*.

    With a band mapping, input channel ``j`` feeds checkpoint band ``k`` (``band_index[k] == j``),
    so it must be normalised with the checkpoint's statistics of band ``k``: normalising the
    dataset cube (dataset order) with this list and then letting the classifier reorder gives
    exactly the pretraining normalisation. Input bands no checkpoint band uses get mean 0, std 1
    (they are dropped). Without a mapping this is the checkpoint's list unchanged.
    ``mae_classifier_from_checkpoint`` stores the result as ``info["band_stats"]``.

    Args:
        info: the dict :func:`mae_classifier_from_checkpoint` returns (``checkpoint_band_stats``,
            ``band_index``, ``num_input_bands`` are read).
    """
    stats, index = info.get("checkpoint_band_stats"), info.get("band_index")
    if not stats or "mean" not in stats or "std" not in stats:
        raise ValueError("the checkpoint holds no band_stats {mean, std} (metadata.band_stats); normalise with the "
                         "statistics of the pretraining data, or rerun pretraining with a current version")
    mean, std = [float(v) for v in stats["mean"]], [float(v) for v in stats["std"]]
    if index is None:
        return {"mean": mean, "std": std}
    n = info.get("num_input_bands") or max(index) + 1
    out_mean, out_std = [0.0] * n, [1.0] * n
    for k, j in enumerate(index):
        if j >= 0:
            out_mean[j], out_std[j] = mean[k], std[k]
    return {"mean": out_mean, "std": out_std}
