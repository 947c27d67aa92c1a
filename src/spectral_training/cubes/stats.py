"""Per-band statistics in one streaming pass over the store (float64, Chan's parallel merge).

Each block of samples contributes (count, mean, M2, min, max) per band; blocks are merged with
Chan et al.'s pairwise formula, so memory is one block plus a fixed-size pixel sample for the
percentiles, whatever the size of the store.

Within a block, sums and sums of squares are accumulated in float64 from the float32 data: the
square of a float32 is exact in float64 (48 significant bits < 53), so a block's M2 loses only
the digits that the ratio mean/std costs (about 1e-13 relative for typical radiances).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from .store import CubeStore, read_samples

PERCENTILES = (2.0, 98.0)


@dataclass
class RunningBandStats:
    """Per-band count, mean, M2 (sum of squared deviations), min and max, mergeable."""

    num_bands: int
    count: np.ndarray = field(init=False)
    mean: np.ndarray = field(init=False)
    m2: np.ndarray = field(init=False)
    minimum: np.ndarray = field(init=False)
    maximum: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        c = self.num_bands
        self.count = np.zeros(c, dtype=np.int64)
        self.mean = np.zeros(c, dtype=np.float64)
        self.m2 = np.zeros(c, dtype=np.float64)
        self.minimum = np.full(c, np.inf, dtype=np.float64)
        self.maximum = np.full(c, -np.inf, dtype=np.float64)

    def merge(self, count: np.ndarray, mean: np.ndarray, m2: np.ndarray, minimum: np.ndarray, maximum: np.ndarray) -> None:
        """Chan's merge of another partial result into this one."""
        n_a = self.count.astype(np.float64)
        n_b = np.asarray(count, dtype=np.float64)
        n = n_a + n_b
        safe_n = np.where(n > 0, n, 1.0)
        delta = mean - self.mean
        self.mean = self.mean + delta * (n_b / safe_n)
        self.m2 = self.m2 + m2 + delta**2 * (n_a * n_b / safe_n)
        self.count = self.count + np.asarray(count, dtype=np.int64)
        self.minimum = np.minimum(self.minimum, minimum)
        self.maximum = np.maximum(self.maximum, maximum)

    def update(self, block: np.ndarray) -> None:
        """Add a float32 block of shape (k, C, H, W)."""
        self.merge(*block_moments(block))

    @property
    def std(self) -> np.ndarray:
        """Population standard deviation (ddof=0), as ``np.std`` computes it."""
        return np.sqrt(self.m2 / np.maximum(self.count, 1))


def _moments(block: np.ndarray) -> tuple[np.ndarray, ...]:
    n = block.shape[0] * block.shape[2] * block.shape[3]
    total = block.sum(axis=(0, 2, 3), dtype=np.float64)
    squares = np.einsum("kchw,kchw->c", block, block, dtype=np.float64)
    mean = total / max(n, 1)
    m2 = np.maximum(squares - total * mean, 0.0)
    return (
        np.full(block.shape[1], n, dtype=np.int64),
        mean,
        m2,
        block.min(axis=(0, 2, 3)).astype(np.float64),
        block.max(axis=(0, 2, 3)).astype(np.float64),
    )


_POOL: ThreadPoolExecutor | None = None


def block_moments(block: np.ndarray, threads: int | None = None) -> tuple[np.ndarray, ...]:
    """(count, mean, M2, min, max) per band of a (k, C, H, W) block.

    The bands are split across threads: numpy's reductions release the GIL, so both cores work.
    """
    global _POOL
    threads = threads or min(os.cpu_count() or 1, 4)
    c = block.shape[1]
    if threads <= 1 or c < 2 * threads:
        return _moments(block)
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="band-stats")
    bounds = np.linspace(0, c, threads + 1).astype(int)
    parts = list(_POOL.map(lambda i: _moments(block[:, bounds[i] : bounds[i + 1]]), range(threads)))
    return tuple(np.concatenate([p[j] for p in parts]) for j in range(5))


class PixelSample:
    """A fixed-size uniform sample of pixels (all bands), for percentile estimates.

    The number of pixels drawn per sample is fixed in advance from the sample count, so the
    sample's size, and memory, does not grow with the store.
    """

    def __init__(self, num_bands: int, num_samples: int, pixels_per_image: int, budget: int, seed: int = 0):
        self.per_sample = max(1, min(pixels_per_image, budget // max(num_samples, 1)))
        self.rng = np.random.default_rng(seed)
        self.values: list[np.ndarray] = []

    def update(self, block: np.ndarray) -> None:
        k, c, h, w = block.shape
        flat = block.reshape(k, c, h * w)
        picks = self.rng.integers(0, h * w, size=(k, self.per_sample))
        self.values.append(np.take_along_axis(flat, picks[:, None, :], axis=2).transpose(1, 0, 2).reshape(c, -1))

    def percentiles(self, qs: tuple[float, ...]) -> dict[float, np.ndarray]:
        data = np.concatenate(self.values, axis=1) if self.values else np.zeros((0, 0))
        return {q: np.percentile(data, q, axis=1) for q in qs}


def compute_band_stats(
    store: CubeStore,
    indices: np.ndarray,
    *,
    block_size: int = 8,
    percentile_budget: int = 20000,
    seed: int = 0,
    show_progress: bool = True,
) -> dict:
    """Per-band mean, std, min, max, count and 2nd/98th percentiles over the samples ``indices``.

    Percentiles are estimated from a uniform sample of about ``percentile_budget`` pixels per
    band (exact percentiles would need the whole split in memory); mean and std are exact.
    """
    indices = np.sort(np.asarray(indices, dtype=np.int64))  # file order: sequential reads
    info = store.info
    c, t = info["num_bands"], info["tile_size"]
    if len(indices) == 0:
        raise ValueError(
            f"{store.path}: no training samples to compute band statistics from. "
            f"Check the ingestion report and the split fractions (ingestion.splits.train)."
        )
    running = RunningBandStats(c)
    sample = PixelSample(c, len(indices), t * t, percentile_budget, seed)
    buffer = np.empty((block_size, c, t, t), dtype=np.float32)
    with store.open() as f:
        cubes = f["cubes"]
        starts = range(0, len(indices), block_size)
        for start in tqdm(starts, desc="band stats", unit="block", disable=not show_progress):
            chunk = indices[start : start + block_size]
            block = read_samples(cubes, chunk, out=buffer[: len(chunk)])
            running.update(block)
            sample.update(block)
    pct = sample.percentiles(PERCENTILES)
    names = info["band_names"]
    wavelengths = info["wavelengths_nm"]
    bands = []
    for i in range(c):
        bands.append({
            "band": names[i],
            "wavelength_nm": wavelengths[i] if wavelengths else None,
            "mean": float(running.mean[i]),
            "std": float(running.std[i]),
            "min": float(running.minimum[i]),
            "max": float(running.maximum[i]),
            "count": int(running.count[i]),
            "p2": float(pct[2.0][i]),
            "p98": float(pct[98.0][i]),
        })
    return {
        "band_names": names,
        "wavelengths_nm": wavelengths,
        "split": "train",
        "num_samples": int(len(indices)),
        "bands": bands,
        "mean": running.mean.tolist(),
        "std": running.std.tolist(),
        "percentile_method": f"uniform sample of {sample.per_sample * len(indices)} pixels per band",
    }
