"""Per-band statistics in one streaming pass over the store (Chan's parallel merge in float64).

Each block of samples contributes (count, mean, M2, min, max) per band; blocks are merged with
Chan et al.'s pairwise formula, so memory is a few blocks (one per thread, plus one read ahead)
plus a fixed-size pixel sample for the percentiles, whatever the size of the store.

Within a block, a compiled kernel (``band_kernels.block_summary``: numba, SIMD, the GIL released)
reduces every (sample, band) row of H*W pixels in one pass to its float64 mean and M2 (from
deviations to the row's first value, whose error is bounded: see that module), min and max, and
merges the block's rows per band; it also copies out the pixels the block offers to the
percentile sample. A bright low-noise band (mean/std = 1e4) keeps float64 accuracy on mean and
std (tested at 1e-6 against numpy's float64; the data are float32, 7 digits).

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

from .band_kernels import block_summary, row_percentiles
from .store import CubeStore, PassMapping, read_samples
from .store_schema import sample_dataset

PERCENTILES = (2.0, 98.0)
MAPPED_BLOCK_BYTES = 8 * 2**20  # the least a block of a mapped pass sums (see compute_band_stats)


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


def block_moments(block: np.ndarray) -> tuple[np.ndarray, ...]:
    """(count, mean, M2, min, max) per band of a (k, C, H, W) block, as float64 (each (sample,
    band) row by the compiled kernel, merged with Chan's formula: see the module docstring)."""
    k, c, h, w = block.shape
    if k == 0 or h * w == 0:
        return (np.zeros(c, dtype=np.int64), np.zeros(c), np.zeros(c), np.full(c, np.inf), np.full(c, -np.inf))
    return block_summary(*_as_bytes(block), c, h * w, np.empty((k, 0), dtype=np.int64))[0]


def _as_bytes(block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A (k, C, H, W) block as the kernel reads samples: float32 bytes, and each sample's offset."""
    flat = np.ascontiguousarray(block, dtype=np.float32)
    return flat.reshape(-1).view(np.uint8), np.arange(len(block), dtype=np.int64) * flat[0].nbytes


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


_PERCENTILE_POOL = _PerProcessPool(2, "band-percentiles")
_BLOCK_POOLS = {n: _PerProcessPool(n, f"band-stats-{n}") for n in range(1, 5)}


def _block_pool(workers: int) -> ThreadPoolExecutor:
    return _BLOCK_POOLS[workers].get()


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

    def reserve(self, m: int) -> np.ndarray | None:
        """The reservoir's next ``m`` slots, (C, m), for the next ``m`` offers to be written in
        place (by a worker thread), counted as offered now; None when they would not all fit
        before the reservoir is full: those offers go through ``add``, in order."""
        if self.offered + m > self.budget:
            return None
        slots = self.values[:, self.offered : self.offered + m]
        self.offered += m
        return slots

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
        if self.size == 0:
            return {q: np.full(self.values.shape[0], np.nan) for q in qs}
        bands = len(self.values)
        halves = [slice(0, bands // 2), slice(bands // 2, bands)] if bands >= 2 else [slice(0, bands)]
        # numpy's linear rule; the two halves of the bands on two threads (the kernel drops the GIL)
        parts = _PERCENTILE_POOL.get().map(lambda half: row_percentiles(self.values[half], qs, columns=self.size), halves)
        values = np.concatenate(list(parts), axis=1)
        return {q: values[i] for i, q in enumerate(qs)}


def _summarise_block(read: Callable, chunk: np.ndarray, buffer: np.ndarray, picks: np.ndarray,
                     slots: np.ndarray | None) -> tuple:
    """Read one block into ``buffer`` and reduce it: its moments, and the pixels it offers
    (written into the reservoir's ``slots`` when given, else returned)."""
    block = read(chunk, out=buffer[: len(chunk)])
    _, c, h, w = block.shape
    return _summary(*_as_bytes(block), c, h * w, picks, slots)


def _summarise_mapped_block(mapping: PassMapping, rows: slice, picks: np.ndarray, slots: np.ndarray | None) -> tuple:
    """Reduce the samples ``rows`` of a pass mapping where they lie (no copy), then drop their
    pages from the process: the block's moments, and the pixels it offers (as above)."""
    offsets = mapping.offsets[rows]
    c, h, w = mapping.sample_shape
    summary = _summary(mapping.bytes, offsets, c, h * w, picks, slots)
    mapping.release(offsets)
    return summary


def _summary(source: np.ndarray, offsets: np.ndarray, bands: int, pixels: int, picks: np.ndarray,
             slots: np.ndarray | None) -> tuple:
    moments, offers = block_summary(source, offsets, bands, pixels, picks, offers=slots)
    return moments, (None if slots is not None else offers)  # offers written in place need no add


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

    Blocks are taken in file order and reduced on ``workers`` threads (default: the CPU count,
    at most 4; the kernels and reads release the GIL), each block summed by one thread while the
    next blocks are summed by the others; the main thread merges the results in block order, so
    the figures do not depend on the number of threads. An uncompressed cube store is summed
    where it lies, mapped in memory (each block's pages dropped from the process once summed);
    other stores are read block by block into ``workers + 1`` buffers. Memory: a few blocks and
    the percentile sample, whatever the number of samples.
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
    workers = max(1, min(workers or os.cpu_count() or 1, 4))
    pool = _block_pool(workers)
    with contextlib.ExitStack() as stack:
        mapping = None if series else store.map_for_pass(indices)
        if mapping is not None:  # summed where the samples lie in the page cache: no copy
            stack.callback(mapping.close)
            # Nothing is copied, so blocks can be larger: a few MiB each keeps the Python work
            # per block (~0.1 ms: hand-over, merge, releasing pages) a small share of the pass.
            block_size = max(block_size, MAPPED_BLOCK_BYTES // (c * t * t * 4))
        elif store.plain_reads:
            read = functools.partial(store.read, streaming=True)  # os.preadv: threads read in parallel
        else:  # compressed: one HDF5 handle for the pass (h5py runs one call at a time)
            data = sample_dataset(stack.enter_context(store.open()))
            read = functools.partial(read_samples, data)
        chunks = [indices[start : start + block_size] for start in range(0, len(indices), block_size)]
        in_flight = min(workers + 1, len(chunks))  # one block read ahead of the busy threads
        copies = 0 if mapping is not None else in_flight
        buffers = [np.empty((block_size, *sample_shape), dtype=np.float32) for _ in range(copies)]
        masks = [np.empty((block_size, dates, t, t), dtype=bool) for _ in range(copies)] if series else []

        # Which pixels each image offers, drawn at once (one generator call, not one per block).
        all_picks = None if series else sample.draw(len(indices), t * t)

        def submit(b: int) -> Future:
            if series:
                fractions = sample.draw_fractions(len(chunks[b]))  # drawn here, in block order
                return pool.submit(_summarise_series_block, read, store.read_valid, chunks[b],
                                   buffers[b % in_flight], masks[b % in_flight], fractions)
            rows = slice(b * block_size, b * block_size + len(chunks[b]))
            slots = sample.reserve(all_picks[rows].size)  # reserved in block order
            if mapping is not None:
                return pool.submit(_summarise_mapped_block, mapping, rows, all_picks[rows], slots)
            return pool.submit(_summarise_block, read, chunks[b], buffers[b % in_flight], all_picks[rows], slots)

        pending = [submit(b) for b in range(in_flight)]
        stack.callback(wait, pending)  # on an error too: no thread still reads when the file closes
        for b in tqdm(range(len(chunks)), desc="band stats", unit="block", disable=not show_progress):
            moments, offers = pending[b % in_flight].result()
            if b + in_flight < len(chunks):
                pending[b % in_flight] = submit(b + in_flight)  # block b's buffer is free again
            running.merge(*moments)
            if offers is not None:  # not written in place: the reservoir was full
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
