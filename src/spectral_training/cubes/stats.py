"""Per-band statistics in one streaming pass over the store (Chan's parallel merge in float64).

Each block of samples contributes (count, mean, M2, min, max) per band; blocks are merged with
Chan et al.'s pairwise formula, so memory is a few blocks (one per thread, plus one read ahead)
plus a fixed-size pixel sample for the percentiles, whatever the size of the store.

Within a block, every (sample, band) row of H*W pixels is reduced in float32, where the CPU
does twice the work per instruction and nothing is converted: its float32 mean is the shift,
then the centred sum and the centred sum of squares of the deviations (x - shift) are summed
(numpy's pairwise summation: error ~1e-7 relative, not n * 1e-7). Deviations from a shift close
to the row's mean are exact in float32 (no sum(x^2) - sum(x) * mean cancellation), and the
rows' partial moments are corrected for the shift and merged in float64, so a bright low-noise
band (mean/std = 1e4) keeps ~1e-7 relative accuracy on mean and std (the data are float32,
7 digits): tested at 1e-6 against numpy's float64.

A series store (``sample_layout: series``) is summed over its valid observations only: the
pixels of real dates that the validity mask marks as observed (clouds, shadows, fill and the
padding dates left out), each sample's (C, n_valid) values merged with Chan's formula for
unequal counts; the percentile sample draws among the valid observations too.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from .store import CubeStore, read_samples
from .store_schema import sample_dataset

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


_SCRATCH = threading.local()  # one float32 scratch per thread, reused from block to block


def _scratch(rows: int, cols: int) -> np.ndarray:
    buf = getattr(_SCRATCH, "buf", None)
    if buf is None or buf.size < rows * cols:
        buf = _SCRATCH.buf = np.empty(rows * cols, dtype=np.float32)
    return buf[: rows * cols].reshape(rows, cols)


def _row_moments(rows: np.ndarray) -> np.ndarray:
    """(shift, centred sum, centred sum of squares, min, max) of each row of a float32 (R, P)
    array, as float64 (5, R): the shift is the row's float32 mean, the sums are of x - shift."""
    r, p = rows.shape
    out = np.empty((5, r), dtype=np.float64)
    # einsum's row sums run ~2x numpy's pairwise sum here; their float32 rounding only moves the
    # shift, which the centred sum corrects. (BLAS would be faster still, but its threads spin
    # after each call and take the core the next numpy loop needs: measured 10x slower squares.)
    shift = np.einsum("ij->i", rows)
    shift /= np.float32(p)
    dev = _scratch(r, p)
    np.subtract(rows, shift[:, None], out=dev)  # exact: each value is close to its row's shift
    out[0] = shift
    out[1] = np.einsum("ij->i", dev)  # what the shift missed of the row's mean: small
    np.square(dev, out=dev)
    out[2] = dev.sum(axis=1)  # numpy's pairwise summation: ~1e-7 relative error, not p * 1e-7
    out[3] = rows.min(axis=1)
    out[4] = rows.max(axis=1)
    return out


def _moments(block: np.ndarray, threads: int = 1) -> tuple[np.ndarray, ...]:
    """(count, mean, M2, min, max) per band of a (k, C, H, W) block; the (sample, band) rows are
    shared among ``threads`` threads, and the result is the same for any number of them."""
    k, c, h, w = block.shape
    hw = h * w
    if k == 0 or hw == 0:
        return (np.zeros(c, dtype=np.int64), np.zeros(c), np.zeros(c), np.full(c, np.inf), np.full(c, -np.inf))
    rows = np.ascontiguousarray(block, dtype=np.float32).reshape(k * c, hw)  # one row per (sample, band)
    if threads > 1 and len(rows) >= 2 * threads:
        bounds = np.linspace(0, len(rows), threads + 1).astype(int)
        parts = _ROW_POOL.get().map(lambda i: _row_moments(rows[bounds[i] : bounds[i + 1]]), range(threads))
        per_row = np.concatenate(list(parts), axis=1)
    else:
        per_row = _row_moments(rows)
    shift, centred, squares, minimum, maximum = (part.reshape(k, c) for part in per_row)
    means = shift + centred / hw
    m2s = np.maximum(squares - centred * centred / hw, 0.0)  # M2 about each row's own mean
    # Chan's merge of k parts of equal count hw: the mean of means, and M2 plus the spread of the means.
    mean = means.mean(axis=0)
    m2 = m2s.sum(axis=0) + hw * np.square(means - mean).sum(axis=0)
    return (np.full(c, k * hw, dtype=np.int64), mean, m2, minimum.min(axis=0), maximum.max(axis=0))


class _PerProcessPool:
    """A lazily started thread pool, started again in a forked child (which has no threads)."""

    def __init__(self, workers: int, name: str):
        self.workers, self.name = workers, name
        self._pool: ThreadPoolExecutor | None = None
        self._pid: int | None = None
        self._lock = threading.Lock()

    def get(self) -> ThreadPoolExecutor:
        if self._pool is None or self._pid != os.getpid():
            with self._lock:
                if self._pool is None or self._pid != os.getpid():
                    self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix=self.name)
                    self._pid = os.getpid()
        return self._pool


_ROW_POOL = _PerProcessPool(4, "band-stats-rows")
_BLOCK_POOLS = {n: _PerProcessPool(n, f"band-stats-{n}") for n in range(1, 5)}


def _block_pool(workers: int) -> ThreadPoolExecutor:
    return _BLOCK_POOLS[workers].get()


def block_moments(block: np.ndarray, threads: int | None = None) -> tuple[np.ndarray, ...]:
    """(count, mean, M2, min, max) per band of a (k, C, H, W) block, as float64 (summed in float32
    per (sample, band) row and merged in float64: see the module docstring).

    The rows are split across ``threads`` threads (default: the CPU count, at most 4): numpy's
    loops release the GIL, so the cores work together.
    """
    return _moments(block, threads=min(threads or os.cpu_count() or 1, 4))


class PixelSample:
    """A uniform random sample of at most ``budget`` pixels (all bands), for percentile estimates.

    Each image offers ``budget // num_samples`` random pixels (at least one, at most all of
    them), so a split of up to ``budget`` images is sampled evenly, image by image. The offers
    go through a reservoir of ``budget`` pixels (Vitter's algorithm R, drawn per block): the
    first ones fill it, then the t-th pixel offered replaces a random slot with probability
    ``budget / t``. Memory is therefore fixed at ``budget x bands`` float32 whatever the number
    of samples streamed, also beyond ``budget`` samples (or more than ``num_samples``, which
    only sets the pixels offered per image), where the reservoir keeps a uniform sample of the
    offers.
    """

    def __init__(self, num_bands: int, num_samples: int, pixels_per_image: int, budget: int, seed: int = 0):
        self.budget = max(1, int(budget))
        self.per_sample = max(1, min(pixels_per_image, self.budget // max(num_samples, 1)))
        # Two streams: which pixels a block offers, and which slots offers replace. Drawn in block
        # order each, so the sample does not depend on how reading and summing are overlapped.
        picks_seed, slots_seed = np.random.SeedSequence(seed).spawn(2)
        self.rng = np.random.default_rng(picks_seed)
        self.slot_rng = np.random.default_rng(slots_seed)
        self.values = np.empty((num_bands, self.budget), dtype=np.float32)  # (C, budget), filled from slot 0
        self.offered = 0  # pixels offered so far

    @property
    def size(self) -> int:
        """Pixels held (per band): ``budget``, or every pixel offered when fewer."""
        return min(self.offered, self.budget)

    def draw(self, num_images: int, pixels_per_image: int) -> np.ndarray:
        """The pixels (flat indices, (k, per_sample)) that the next block of images offers."""
        return self.rng.integers(0, pixels_per_image, size=(num_images, self.per_sample))

    def draw_fractions(self, num_images: int) -> np.ndarray:
        """Uniform fractions (k, per_sample) in [0, 1): which of its valid observations each image
        of a series block offers, as ``floor(fraction * n_valid)`` (known only once it is read)."""
        return self.rng.random(size=(num_images, self.per_sample))

    @staticmethod
    def gather(block: np.ndarray, picks: np.ndarray) -> np.ndarray:
        """The picked pixels of a (k, C, H, W) block as (C, k * per_sample) float32."""
        k, c, h, w = block.shape
        flat = block.reshape(k, c, h * w)
        return flat[np.arange(k)[:, None], :, picks].transpose(2, 0, 1).reshape(c, -1)  # (k, m, C) -> (C, k*m)

    def add(self, offers: np.ndarray) -> None:
        """Put offered pixels (C, m) through the reservoir, in order."""
        m = offers.shape[1]
        filling = min(max(self.budget - self.offered, 0), m)
        if filling:  # the reservoir is not full yet: the first offers go straight in
            self.values[:, self.offered : self.offered + filling] = offers[:, :filling]
        if filling < m:
            rank = self.offered + np.arange(filling, m, dtype=np.int64) + 1  # 1-based rank of each offer
            slots = np.floor(self.slot_rng.random(m - filling) * rank).astype(np.int64)
            hit = np.flatnonzero(slots < self.budget)
            if len(hit):
                # When two offers draw one slot the later one wins, as one-by-one replacement does.
                last = len(hit) - 1 - np.unique(slots[hit][::-1], return_index=True)[1]
                hit = hit[last]
                self.values[:, slots[hit]] = offers[:, filling + hit]
        self.offered += m

    def update(self, block: np.ndarray) -> None:
        k, _, h, w = block.shape
        self.add(self.gather(block, self.draw(k, h * w)))

    def percentiles(self, qs: tuple[float, ...]) -> dict[float, np.ndarray]:
        data = self.values[:, : self.size]
        if data.shape[1] == 0:
            return {q: np.full(data.shape[0], np.nan) for q in qs}
        values = np.percentile(data, list(qs), axis=1)  # one partition for every quantile
        return {q: values[i] for i, q in enumerate(qs)}


def _summarise_block(read: Callable, chunk: np.ndarray, buffer: np.ndarray, picks: np.ndarray) -> tuple:
    """Read one block into ``buffer`` and reduce it: its moments, and the pixels it offers."""
    block = read(chunk, out=buffer[: len(chunk)])
    return _moments(block), PixelSample.gather(block, picks)


def _valid_observations(series: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """A series sample's (L, C, H, W) values at its valid (L, H, W) pixels, as (C, n_valid) float32."""
    c = series.shape[1]
    return np.moveaxis(series, 1, 0).reshape(c, -1)[:, valid.reshape(-1)]


def series_moments(series: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, ...]:
    """(count, mean, M2, min, max) per band of a (k, L, C, H, W) series block over its valid
    observations (``valid`` bool (k, L, H, W)), in float64; samples are merged with Chan's
    formula for unequal counts."""
    k, c = series.shape[0], series.shape[2]
    counts = np.zeros(k, dtype=np.int64)
    means = np.zeros((k, c), dtype=np.float64)
    m2s = np.zeros((k, c), dtype=np.float64)
    minimum, maximum = np.full(c, np.inf), np.full(c, -np.inf)
    for i in range(k):
        obs = _valid_observations(series[i], valid[i]).astype(np.float64)
        n = obs.shape[1]
        if n == 0:
            continue
        counts[i] = n
        minimum = np.minimum(minimum, obs.min(axis=1))
        maximum = np.maximum(maximum, obs.max(axis=1))
        means[i] = obs.mean(axis=1)
        obs -= means[i][:, None]  # deviations from the sample's own mean: no cancellation
        m2s[i] = np.einsum("ij,ij->i", obs, obs)
    total = int(counts.sum())
    if total == 0:
        return (np.zeros(c, dtype=np.int64), np.zeros(c), np.zeros(c), minimum, maximum)
    mean = (counts[:, None] * means).sum(axis=0) / total
    m2 = m2s.sum(axis=0) + (counts[:, None] * np.square(means - mean)).sum(axis=0)
    return (np.full(c, total, dtype=np.int64), mean, m2, minimum, maximum)


def _summarise_series_block(read: Callable, read_valid: Callable, chunk: np.ndarray, buffer: np.ndarray,
                            masks: np.ndarray, fractions: np.ndarray) -> tuple:
    """Read one series block and its masks, reduce it over the valid observations, and gather
    the observations it offers to the percentile sample."""
    block = read(chunk, out=buffer[: len(chunk)])
    valid = read_valid(chunk, out=masks[: len(chunk)])
    offers = []
    for i in range(len(chunk)):
        obs = _valid_observations(block[i], valid[i])
        if obs.shape[1]:
            offers.append(obs[:, np.floor(fractions[i] * obs.shape[1]).astype(np.int64)])
    c = block.shape[2]
    return series_moments(block, valid), (np.concatenate(offers, axis=1) if offers else np.empty((c, 0), np.float32))


def compute_band_stats(
    store: CubeStore,
    indices: np.ndarray,
    *,
    block_size: int = 8,
    percentile_budget: int = 20000,
    seed: int = 0,
    show_progress: bool = True,
    workers: int | None = None,
) -> dict:
    """Per-band mean, std, min, max, count and 2nd/98th percentiles over the samples ``indices``.

    Percentiles are estimated from a uniform sample of at most ``percentile_budget`` pixels per
    band (exact percentiles would need the whole split in memory); mean and std are exact. A
    series store counts its valid observations only (see the module docstring).

    Blocks are read in file order and reduced on ``workers`` threads (default: the CPU count,
    at most 4; reads and numpy release the GIL), each block read and summed by one thread while
    the next blocks are read and summed by the others; the main thread merges the results in
    block order, so the figures do not depend on the number of threads. Memory: ``workers + 1``
    blocks and one float64 sample per thread, whatever the number of samples.
    """
    indices = np.sort(np.asarray(indices, dtype=np.int64))  # file order: sequential reads
    info = store.info
    c, t = info["num_bands"], info["tile_size"]
    if len(indices) == 0:
        raise ValueError(
            f"{store.path}: no training samples to compute band statistics from. "
            f"Check the ingestion report and the split fractions (ingestion.splits.train)."
        )
    series = info["sample_layout"] == "series"
    dates = info["max_seq_len"] if series else 1
    sample_shape = (dates, c, t, t) if series else (c, t, t)
    running = RunningBandStats(c)
    sample = PixelSample(c, len(indices), dates * t * t, percentile_budget, seed)
    chunks = [indices[start : start + block_size] for start in range(0, len(indices), block_size)]
    workers = max(1, min(workers or os.cpu_count() or 1, 4))
    in_flight = min(workers + 1, len(chunks))  # one block read ahead of the busy threads
    buffers = [np.empty((block_size, *sample_shape), dtype=np.float32) for _ in range(in_flight)]
    masks = [np.empty((block_size, dates, t, t), dtype=bool) for _ in range(in_flight)] if series else []
    pool = _block_pool(workers)
    with contextlib.ExitStack() as stack:
        if store.plain_reads:
            read = functools.partial(store.read, streaming=True)  # os.preadv: threads read in parallel
        else:  # compressed: one HDF5 handle for the pass (h5py runs one call at a time)
            data = sample_dataset(stack.enter_context(store.open()))
            read = functools.partial(read_samples, data)

        def submit(b: int) -> Future:
            if series:
                fractions = sample.draw_fractions(len(chunks[b]))  # drawn here, in block order
                return pool.submit(_summarise_series_block, read, store.read_valid, chunks[b],
                                   buffers[b % in_flight], masks[b % in_flight], fractions)
            picks = sample.draw(len(chunks[b]), t * t)  # drawn here, in block order
            return pool.submit(_summarise_block, read, chunks[b], buffers[b % in_flight], picks)

        pending = [submit(b) for b in range(in_flight)]
        stack.callback(wait, pending)  # on an error too: no thread still reads when the file closes
        for b in tqdm(range(len(chunks)), desc="band stats", unit="block", disable=not show_progress):
            moments, offers = pending[b % in_flight].result()
            if b + in_flight < len(chunks):
                pending[b % in_flight] = submit(b + in_flight)  # block b's buffer is free again
            running.merge(*moments)
            sample.add(offers)
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
    result = {
        "band_names": names,
        "wavelengths_nm": wavelengths,
        "split": "train",
        "num_samples": int(len(indices)),
        "bands": bands,
        "mean": running.mean.tolist(),
        "std": running.std.tolist(),
        "percentile_method": f"uniform sample of {sample.size} pixels per band",
    }
    if series:
        result["sample_layout"] = "series"
        result["observations"] = "valid pixels of real dates only (clouds, shadows, fill and padding left out)"
    return result
