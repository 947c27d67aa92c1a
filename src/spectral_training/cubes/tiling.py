"""Cutting cubes into tiles, repairing a few non-finite values, labelling tiles."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from numba import njit

NAN_POLICIES = ("band_mean", "zero", "reject")


def tile_starts(size: int, tile: int, stride: int) -> list[int]:
    """Window starts along one axis; the last window is aligned to the edge so no pixel is lost."""
    if tile > size:
        return []
    starts = list(range(0, size - tile + 1, stride))
    if starts[-1] != size - tile:
        starts.append(size - tile)
    return starts


def tile_windows(height: int, width: int, tile: int, stride: int) -> np.ndarray:
    """All windows of a (height, width) image as int32 rows of (row, col, tile, tile)."""
    rows, cols = tile_starts(height, tile, stride), tile_starts(width, tile, stride)
    return np.array([(r, c, tile, tile) for r in rows for c in cols], dtype=np.int32).reshape(-1, 4)


@njit(nogil=True, error_model="numpy", cache=True)
def _copy_windows(planes, first_band, windows, scale, out):
    """Copy bands ``first_band ...`` of every window from (b, H, W) consecutive band planes, of
    any numeric dtype, into ``out[:, first_band:first_band + b]`` as float32 (times ``scale``
    when it is not 1)."""
    bands, height, width = planes.shape
    source = planes.reshape(-1)
    scaled = scale != 1.0
    factor = np.float32(scale)
    # Unsigned indices: numba then leaves out the negative-index wrap-around, whose branch keeps
    # LLVM from vectorising the copy of each row. Band by band, so each plane is read while in cache.
    size = np.uint64(windows[0, 2]) if len(windows) else np.uint64(0)
    plane = np.uint64(height) * np.uint64(width)
    for b in range(np.uint64(bands)):
        for k in range(len(windows)):
            top, left = np.uint64(windows[k, 0]), np.uint64(windows[k, 1])
            target = out[k, first_band + b].reshape(-1)
            for i in range(size):
                start, at = b * plane + (top + i) * np.uint64(width) + left, i * size
                for j in range(size):
                    value = np.float32(source[start + j])
                    target[at + j] = value * factor if scaled else value


@njit(nogil=True, error_model="numpy", cache=True)
def _cut_slab(slab, first_band, windows, scale, out):
    """:func:`_copy_windows` of a slab of band planes, and the slab's count of NaN/Inf values,
    each pixel counted once however many windows hold it."""
    source = slab.reshape(-1)
    nonfinite = 0
    for x in range(np.uint64(source.size)):
        nonfinite += not abs(np.float32(source[x])) < np.inf  # False for NaN and for Inf
    _copy_windows(slab, first_band, windows, scale, out)
    return nonfinite


def cut(cube: np.ndarray, windows: np.ndarray) -> np.ndarray:
    """Copy the T x T windows (row, col, T, T) of a (C, H, W) cube into one (k, C, T, T) float32
    array (a compiled copy that releases the GIL); a window outside the cube, or of another size
    than the first, is a ValueError naming it."""
    windows, t = checked_windows(windows, *cube.shape[1:])
    out = np.empty((len(windows), cube.shape[0], t, t), dtype=np.float32)
    _copy_windows(np.ascontiguousarray(cube), 0, windows, 1.0, out)
    return out


def checked_windows(windows: np.ndarray, height: int, width: int) -> tuple[np.ndarray, int]:
    """The windows as int64 (k, 4) and their size T; a window outside the (height, width) image,
    or of another size than the first, is a ValueError naming it."""
    windows = np.asarray(windows, dtype=np.int64).reshape(-1, 4)
    t = int(windows[0, 2]) if len(windows) else 0
    bad = ((windows[:, 2] != t) | (windows[:, 3] != t) | (windows[:, 0] < 0) | (windows[:, 1] < 0)
           | (windows[:, 0] + t > height) | (windows[:, 1] + t > width))
    if bad.any():
        raise ValueError(f"window {windows[np.argmax(bad)].tolist()} is not a {t} x {t} window inside the "
                         f"{height} x {width} image")
    return windows, t


def cut_maps(label_map: np.ndarray, windows: np.ndarray) -> np.ndarray:
    return np.stack([label_map[r : r + h, c : c + w] for r, c, h, w in windows]).astype(np.int32)


def majority_labels(label_maps: np.ndarray) -> np.ndarray:
    """Most frequent non-zero class of each (T, T) map; -1 when a tile has no labelled pixel.

    Ties go to the smaller class id, so the result is deterministic.
    """
    labels = np.full(len(label_maps), -1, dtype=np.int64)
    for i, tile_map in enumerate(label_maps):
        classes = tile_map[tile_map > 0]
        if classes.size:
            labels[i] = int(np.bincount(classes).argmax())
    return labels


@dataclass
class RepairResult:
    tiles: np.ndarray  # the tiles that are kept, repaired in place
    kept: np.ndarray  # bool (k,), False for tiles rejected for too many non-finite values
    nonfinite_fraction: np.ndarray  # float (k,)
    repaired_tiles: int
    repaired_values: int

    @classmethod
    def all_kept(cls, tiles: np.ndarray) -> "RepairResult":
        """The result for tiles known to hold no NaN/Inf: all kept, none repaired."""
        k = len(tiles)
        return cls(tiles, np.ones(k, dtype=bool), np.zeros(k), 0, 0)


def repair_nonfinite(tiles: np.ndarray, policy: str, max_fraction: float) -> RepairResult:
    """Replace a few NaN/Inf values per tile; reject tiles with more than ``max_fraction`` of them.

    ``band_mean`` fills a value with the mean of the finite values of its band in the same tile
    (a band with no finite value in the tile gets 0); ``zero`` fills 0; ``reject`` rejects any
    tile with a non-finite value.
    """
    if policy not in NAN_POLICIES:
        raise ValueError(f"nan_policy '{policy}' is unknown: use one of {', '.join(NAN_POLICIES)}")
    k = len(tiles)
    if k == 0:
        return RepairResult(tiles, np.zeros(0, dtype=bool), np.zeros(0), 0, 0)
    # Fast check: NaN and Inf propagate through a sum, so a finite sum per tile proves every value
    # finite (one float32 sum per tile: about half the time of the exact count below). A sum that
    # overflows to Inf from finite values just takes the exact path.
    with np.errstate(over="ignore", invalid="ignore"):
        all_finite = bool(np.isfinite(tiles.reshape(k, -1).sum(axis=1)).all())
    if all_finite:
        return RepairResult.all_kept(tiles)
    bad = ~np.isfinite(tiles)
    per_tile = bad.reshape(k, -1).sum(axis=1)
    fraction = per_tile / max(tiles[0].size, 1)
    limit = 0.0 if policy == "reject" else max_fraction
    kept = fraction <= limit
    repaired_tiles = repaired_values = 0
    for i in np.flatnonzero(kept & (per_tile > 0)):
        tile, tile_bad = tiles[i], bad[i]
        if policy == "zero":
            tile[tile_bad] = 0.0
        else:
            finite_sum = np.where(tile_bad, 0.0, tile).sum(axis=(1, 2), dtype=np.float64)
            finite_count = (~tile_bad).sum(axis=(1, 2))
            band_mean = np.divide(finite_sum, finite_count, out=np.zeros_like(finite_sum), where=finite_count > 0)
            tile[tile_bad] = np.broadcast_to(band_mean[:, None, None], tile.shape)[tile_bad]
        repaired_tiles += 1
        repaired_values += int(per_tile[i])
    return RepairResult(tiles, kept, fraction, repaired_tiles, repaired_values)


def batched(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))
