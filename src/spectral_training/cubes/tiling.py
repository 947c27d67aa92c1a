"""Cutting cubes into tiles, repairing a few non-finite values, labelling tiles."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

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


def _grid_shape(windows: np.ndarray) -> tuple[int, int] | None:
    """(rows, cols) when the windows are a full regular grid of non-overlapping T x T tiles in
    row-major order (what ``tile_windows`` gives when the image is a multiple of the stride
    and the stride is the tile), else None."""
    k = len(windows)
    if k == 0:
        return None
    r0, c0, t, t2 = (int(v) for v in windows[0])
    if t != t2 or t < 1:
        return None
    nc = int(np.count_nonzero(windows[:, 0] == r0))
    if nc == 0 or k % nc:
        return None
    nr = k // nc
    i, j = np.divmod(np.arange(k), nc)
    expected = np.stack([r0 + i * t, c0 + j * t, np.full(k, t), np.full(k, t)], axis=1)
    return (nr, nc) if np.array_equal(windows, expected) else None


def cut(cube: np.ndarray, windows: np.ndarray) -> np.ndarray:
    """Copy the windows of a (C, H, W) cube into one (k, C, T, T) float32 array.

    Windows that form a full regular grid (row-major, touching, not overlapping) are copied in
    one strided copy; any other set tile by tile.
    """
    k = len(windows)
    c = cube.shape[0]
    t = int(windows[0, 2]) if k else 0
    out = np.empty((k, c, t, t), dtype=np.float32)
    grid = _grid_shape(windows)
    if grid is not None:
        nr, nc = grid
        r0, c0 = int(windows[0, 0]), int(windows[0, 1])
        if r0 + nr * t <= cube.shape[1] and c0 + nc * t <= cube.shape[2]:
            # (C, nr*T, nc*T) -> (nr, nc, C, T, T): tile (i, j) is row i * nc + j of out
            out.reshape(nr, nc, c, t, t)[...] = (
                cube[:, r0 : r0 + nr * t, c0 : c0 + nc * t].reshape(c, nr, t, nc, t).transpose(1, 3, 0, 2, 4)
            )
            return out
    for i, (r, col, h, w) in enumerate(windows):
        out[i] = cube[:, r : r + h, col : col + w]
    return out


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
