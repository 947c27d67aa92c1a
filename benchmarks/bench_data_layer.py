"""Data-layer benchmarks: ingestion, the band-statistics pass, random batch reads, compression.

Each benchmark times the engine beside a plain baseline doing the same bytes, interleaved and
repeated, and reports the medians' ratio against the issue's target:

1. ingestion (scan + tile + hash + append) of float32 HDF5 cubes   >= 0.5x  a plain h5py write
   of the same tiles into a one-sample-chunk dataset (uint16 sources and the time of each
   ingestion stage are reported for information);
2. ``compute_band_stats`` over the whole store                      >= 0.5x  reading the same
   chunks with h5py (``read_direct_chunk``) and nothing else; also against the naive
   load-all-as-float64 ``np.std``; the time of each stage of the pass for information;
   its peak memory must not grow more than 10 % when the store grows 10x (fresh processes);
   its mean/std must match numpy's float64 to 1e-6 relative;
3. a random batch of 32 samples (warm cache), ``CubeStore.read``  >= 0.9x  ``np.fromfile`` of
   the same bytes; ``read_samples`` (reads from a file opened with h5py) and plain h5py
   fancy indexing for information;
4. the same read from lzf and gzip-4 stores, for information.

Also for information: the CPU seconds of the statistics pass and of its baseline (the work each
does, whatever share of the shared cores a run gets), and one-sample reads as a DataLoader's
``__getitem__`` makes them (``CubeStore.read_one``, and the dataset's current ``read_samples`` call).

Run alone: ``python -m benchmarks.bench_data_layer [--size-mb 128]`` from the project root.
All files go to a temporary folder that is deleted at the end.
"""

from __future__ import annotations

import argparse
import itertools
import resource
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from benchmarks.common import MB, Case, machine_info, median, peak_rss_increase, row, run_module_cli, spread, time_interleaved
from spectral_training.cubes.ingest import IngestionParams, ingest_folder, nonfinite_fraction
from spectral_training.cubes.plain_reads import read_plain_cube, read_plain_tiles
from spectral_training.cubes.readers import read_cube, read_cube_header
from spectral_training.cubes.band_kernels import block_summary
from spectral_training.cubes.stats import MAPPED_BLOCK_BYTES, PERCENTILES, PixelSample, RunningBandStats, compute_band_stats
from spectral_training.cubes.store import CubeStore, TileBatch, content_hash, read_samples
from spectral_training.cubes.store_schema import HASH_ALGORITHM
from spectral_training.cubes.tiling import batched, cut, tile_windows

NAME = "data_layer"
BANDS, HEIGHT, WIDTH, TILE = 64, 256, 256, 32  # one source file: 16 MiB of float32, 64 tiles
FILE_BYTES = BANDS * HEIGHT * WIDTH * 4
WRITE_BATCH = 64  # tiles per h5py write in the baseline, as ingestion appends them
READ_BATCH = 32  # samples per random batch
BATCHES_PER_TIMING = 16  # random batches read per timed run, so one run lasts tens of ms
HASH_STAGE = f"content hashes ({HASH_ALGORITHM})"
STATS_ACCURACY = 1e-6  # relative, on mean and std against numpy's float64 (the requirement)
SLOW_BATCHES = 2  # batches per timed run for the compressed stores' readers
FANCY_BATCHES = 1  # batches per timed run for h5py fancy indexing (~0.3 s per batch here)


# ---- synthetic data ----------------------------------------------------------------------------
def synthetic_cube(rng: np.random.Generator, bands: int = BANDS, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """A radiance-like float32 (C, H, W) cube: per-band level 500..3000, a smooth spatial
    pattern of +-20 %, and 5 % sensor noise (so mean/std is about 7, as in real bands)."""
    level = rng.uniform(500, 3000, size=(bands, 1, 1)).astype(np.float32)
    yy, xx = np.ogrid[:height, :width]
    phase = rng.uniform(0, 2 * np.pi, size=2)
    pattern = (np.sin(yy / 13 + phase[0]) * np.cos(xx / 19 + phase[1])).astype(np.float32)
    cube = rng.standard_normal((bands, height, width), dtype=np.float32)
    cube *= 0.05 * level
    cube += level * (1 + 0.2 * pattern)
    return cube


def write_raw_folder(folder: Path, n_files: int, dtype: str, seed: int = 0) -> None:
    """``n_files`` HDF5 files, each one CHW dataset ``cube`` of the synthetic data in ``dtype``."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n_files):
        cube = synthetic_cube(rng)
        if dtype == "uint16":
            cube = np.clip(np.rint(cube), 0, 65535).astype(np.uint16)
        with h5py.File(folder / f"cube_{i:03d}.h5", "w") as f:
            f.create_dataset("cube", data=cube)


def tiles_of_folder(folder: Path) -> np.ndarray:
    """Every tile ingestion cuts from the folder's files, as one float32 (N, C, T, T) array."""
    parts = []
    for path in sorted(folder.glob("*.h5")):
        data = read_cube(path).data
        parts.append(cut(data, tile_windows(HEIGHT, WIDTH, TILE, TILE)))
    return np.concatenate(parts)


def build_store(path: Path, n_samples: int, pool: np.ndarray, compression: str | None = None) -> None:
    """A real store of ``n_samples`` tiles cycled from ``pool``, written through ``CubeStore.append``.

    Hashes are given (unique per sample) rather than computed: this makes big stores fast to
    build, and no test here depends on the hashes (memory growth, accuracy).
    """
    store = CubeStore(path)
    store.create(num_bands=BANDS, tile_size=TILE, band_names=None, wavelengths_nm=None, compression=compression)

    def batches():
        for part in batched(n_samples, WRITE_BATCH):
            ids = range(part.start, part.stop)
            take = np.arange(part.start, part.stop) % len(pool)
            yield TileBatch(
                cubes=pool[take],
                sample_ids=[f"synthetic@{i}" for i in ids],
                source_file="synthetic",
                windows=np.zeros((len(ids), 4), dtype=np.int32),
                labels=np.full(len(ids), -1, dtype=np.int64),
                hashes=[f"{i:032x}" for i in ids],
            )

    store.append(batches())


@dataclass
class Workspace:
    """The files every benchmark shares, made once in a temporary folder."""

    root: Path
    raw_float32: Path
    raw_uint16: Path
    tiles: np.ndarray  # float32 (N, C, T, T): what ingesting raw_float32 stores
    store: Path  # raw_float32 ingested, uncompressed

    counter: itertools.count = field(default_factory=itertools.count)

    @property
    def tile_bytes(self) -> int:
        return int(self.tiles.nbytes)

    def fresh_path(self, stem: str) -> Path:
        """A file name not used before in this workspace (each timed write gets a new file)."""
        return self.root / f"{stem}_{next(self.counter)}.h5"


def make_workspace(root: Path, size_mb: float) -> Workspace:
    n_files = max(1, round(size_mb * 2**20 / FILE_BYTES))
    raw_float32, raw_uint16 = root / "raw_float32", root / "raw_uint16"
    write_raw_folder(raw_float32, n_files, "float32")
    write_raw_folder(raw_uint16, n_files, "uint16")
    tiles = tiles_of_folder(raw_float32)
    store = root / "store_float32.h5"
    _, index = ingest_folder(raw_float32, store, IngestionParams(tile_size=TILE, show_progress=False))
    assert len(index) == len(tiles), f"ingestion stored {len(index)} of {len(tiles)} tiles"
    return Workspace(root, raw_float32, raw_uint16, tiles, store)


def _unlink(path: Path) -> None:
    path.unlink(missing_ok=True)


# ---- 1. ingestion ------------------------------------------------------------------------------
def plain_h5py_write(path: Path, tiles: np.ndarray) -> None:
    """The baseline writer: a (N, C, T, T) float32 dataset, one sample per chunk, batches of 64."""
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("cubes", tiles.shape, dtype="f4", chunks=(1, *tiles.shape[1:]))
        for part in batched(len(tiles), WRITE_BATCH):
            ds[part] = tiles[part]


def bench_ingestion(ws: Workspace, repeats: int) -> tuple[list[dict], dict]:
    """``ingest_folder`` (float32 and uint16 sources) vs ``plain_h5py_write`` of the same tiles.

    Throughput is float32 tile bytes stored per second, for both; the ingestion time includes
    everything ``ingest_folder`` does (scan of headers, one read of each source, non-finite
    check, tile, hash, append, index, report).
    """
    params = IngestionParams(tile_size=TILE, stride=None, show_progress=False)

    def ingest(raw: Path) -> Case:
        return Case(f"ingest {raw.name}", run=lambda p: ingest_folder(raw, p, params),
                    setup=lambda: ws.fresh_path("ingest"), teardown=_unlink)

    cases = [
        ingest(ws.raw_float32),
        Case("h5py write", run=lambda p: plain_h5py_write(p, ws.tiles), setup=lambda: ws.fresh_path("plain"), teardown=_unlink),
        ingest(ws.raw_uint16),
    ]
    times = time_interleaved(cases, repeats=repeats)
    mbps = {name: ws.tile_bytes / MB / median(t) for name, t in times.items()}
    base = mbps["h5py write"]
    rows = [
        row("1. ingestion", "float32 sources, MB/s of tiles", mbps["ingest raw_float32"], "MB/s",
            baseline=base, baseline_label="plain h5py write", min_ratio=0.5),
        row("1. ingestion", "uint16 sources", mbps["ingest raw_uint16"], "MB/s",
            baseline=base, baseline_label="plain h5py write"),
    ]
    details = {"seconds": times, "spread": {k: spread(v) for k, v in times.items()}, "tile_bytes": ws.tile_bytes}
    return rows, details


def ingestion_stages(ws: Workspace, repeats: int = 3) -> tuple[list[dict], dict]:
    """Seconds of each stage ingestion runs for the float32 folder, timed one by one on one
    thread (median of ``repeats``), beside the whole ``ingest_folder`` timed in the same rounds.

    Stages: the scan's header reads (``read_cube_header``); reading each source once, straight
    into tiles with its non-finite count (``read_plain_tiles``, as the append does where the scan
    found the pixels plain); the same read into a cube, then the file's non-finite fraction and
    the cut (what the append does for files it cannot read straight, for comparison: not in the
    sum); content hashing; and ``CubeStore.append`` of ready batches (h5py writes of tiles and
    provenance columns). The per-tile non-finite check (``repair_nonfinite``) is skipped for a
    file with no NaN/Inf, as these are. In ``ingest_folder`` the read, cut and hash run on a
    thread beside the writes, so the stages can add up to more than the total; the remainder
    (index, report, file opens, what the overlap does not hide) is total minus the stages, or 0.
    """
    files = sorted(ws.raw_float32.glob("*.h5"))
    windows = tile_windows(HEIGHT, WIDTH, TILE, TILE)
    stage_names = ["scan headers", "read tiles straight from the source", HASH_STAGE, "CubeStore.append (h5py)"]
    compared = "for comparison: read the cube, check, cut"
    stage_times: dict[str, list[float]] = {name: [] for name in [*stage_names, compared]}
    totals: list[float] = []
    params = IngestionParams(tile_size=TILE, show_progress=False)
    for _ in range(repeats):
        spent = dict.fromkeys([*stage_names, compared], 0.0)
        batches = []
        t0 = time.perf_counter()
        headers = [read_cube_header(path) for path in files]
        spent["scan headers"] = time.perf_counter() - t0
        for path, header in zip(files, headers):
            t0 = time.perf_counter()
            data = read_plain_cube(path, header.shape, header.plain_pixels)
            if nonfinite_fraction(data) != 0.0:
                raise RuntimeError(f"{path}: the synthetic sources are finite, so ingestion skips the per-tile check")
            cut(data, windows)
            t1 = time.perf_counter()
            tiles, nonfinite = read_plain_tiles(path, header.shape, header.plain_pixels, windows)
            t2 = time.perf_counter()
            hashes = [content_hash(tile) for tile in tiles]
            t3 = time.perf_counter()
            spent[compared] += t1 - t0
            spent["read tiles straight from the source"] += t2 - t1
            spent[HASH_STAGE] += t3 - t2
            for part in batched(len(windows), 64):
                k = part.stop - part.start
                batches.append(TileBatch(tiles[part], [f"{path.name}@{i}" for i in range(part.start, part.stop)],
                                         path.name, windows[part], np.full(k, -1, dtype=np.int64), hashes=hashes[part]))
        store = CubeStore(ws.fresh_path("stages"))
        store.create(num_bands=BANDS, tile_size=TILE, band_names=None, wavelengths_nm=None)
        t0 = time.perf_counter()
        store.append(batches)
        spent["CubeStore.append (h5py)"] = time.perf_counter() - t0
        _unlink(store.path)
        for name in spent:
            stage_times[name].append(spent[name])
        path = ws.fresh_path("stages_total")
        t0 = time.perf_counter()
        ingest_folder(ws.raw_float32, path, params)
        totals.append(time.perf_counter() - t0)
        _unlink(path)
    total = median(totals)
    medians = {name: median(stage_times[name]) for name in stage_names}
    medians["rest (index, report, opens)"] = max(0.0, total - sum(medians.values()))
    medians[compared] = median(stage_times[compared])
    rows = [
        row("1. ingestion stages", f"{name}, s", seconds, "s", baseline=total, baseline_label="ingest_folder total",
            note="ratio = share of the total")
        for name, seconds in medians.items()
    ]
    return rows, {"stage_seconds": medians, "ingest_total_seconds": total}


# ---- 2. band statistics ------------------------------------------------------------------------
def stats_pass(store_path: str) -> dict:
    """The engine's statistics pass over every sample (also the peak-memory child's target)."""
    store = CubeStore(store_path)
    return compute_band_stats(store, np.arange(len(store)), block_size=8, show_progress=False)


def plain_h5py_read_chunks(store_path: str, block: int = 8) -> None:
    """The baseline: every sample's chunk, in file order, read with h5py's ``read_direct_chunk``
    (the fastest h5py read: no selection, no filter pipeline) into a reused buffer, nothing else."""
    with h5py.File(store_path, "r") as f:
        ds = f["cubes"]
        buffer = np.empty((block, *ds.shape[1:]), dtype=np.float32)
        flat, dsid = buffer.view(np.uint8).reshape(block, -1), ds.id
        for i in range(ds.shape[0]):
            dsid.read_direct_chunk((i, 0, 0, 0), out=flat[i % block])


def plain_h5py_read_direct(store_path: str, block: int = 8) -> None:
    """For information: the same read through h5py's ordinary ``read_direct`` of 8-sample slices."""
    with h5py.File(store_path, "r") as f:
        ds = f["cubes"]
        buffer = np.empty((block, *ds.shape[1:]), dtype=np.float32)
        for part in batched(ds.shape[0], block):
            ds.read_direct(buffer, source_sel=np.s_[part], dest_sel=np.s_[: part.stop - part.start])


def naive_float64_stats(store_path: str) -> tuple[np.ndarray, np.ndarray]:
    """The naive way: load the whole store, cast to float64, ``np.mean`` / ``np.std`` per band."""
    with h5py.File(store_path, "r") as f:
        data = f["cubes"][()].astype(np.float64)
    return data.mean(axis=(0, 2, 3)), data.std(axis=(0, 2, 3))


def _max_rel_error(got, want) -> float:
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    return float(np.max(np.abs(got - want) / np.abs(want)))


def bench_stats(ws: Workspace, repeats: int) -> tuple[list[dict], dict]:
    """``compute_band_stats`` over every sample vs ``plain_h5py_read_chunks`` of the same store
    (warm cache: the store was just written and read) and vs ``naive_float64_stats``; accuracy
    against numpy's float64 mean/std of the whole array. Throughput is float32 store bytes / s."""
    path = str(ws.store)
    cases = [
        Case("compute_band_stats", run=lambda _: stats_pass(path)),
        Case("h5py read_direct_chunk", run=lambda _: plain_h5py_read_chunks(path)),
        Case("h5py read_direct", run=lambda _: plain_h5py_read_direct(path)),
        Case("naive float64", run=lambda _: naive_float64_stats(path)),
    ]
    times = time_interleaved(cases, repeats=repeats)
    gbps = {name: ws.tile_bytes / 1e9 / median(t) for name, t in times.items()}
    result = stats_pass(path)
    want_mean, want_std = naive_float64_stats(path)
    err_mean, err_std = _max_rel_error(result["mean"], want_mean), _max_rel_error(result["std"], want_std)
    rows = [
        row("2. stats pass", "compute_band_stats, GB/s", gbps["compute_band_stats"], "GB/s",
            baseline=gbps["h5py read_direct_chunk"], baseline_label="h5py read_direct_chunk, nothing else", min_ratio=0.5),
        row("2. stats pass", "h5py read_direct (8-sample slices)", gbps["h5py read_direct"], "GB/s",
            baseline=gbps["h5py read_direct_chunk"], baseline_label="h5py read_direct_chunk"),
        row("2. stats pass", "compute_band_stats vs naive", gbps["compute_band_stats"], "GB/s",
            baseline=gbps["naive float64"], baseline_label="load all as float64 + np.std"),
        row("2. stats accuracy", "max relative error of mean", err_mean, "", max_value=STATS_ACCURACY),
        row("2. stats accuracy", "max relative error of std (ddof=0)", err_std, "", max_value=STATS_ACCURACY),
    ]
    details = {"seconds": times, "spread": {k: spread(v) for k, v in times.items()},
               "max_rel_error": {"mean": err_mean, "std": err_std}}
    return rows, details


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process so far (all threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def stats_cpu_time(ws: Workspace, repeats: int = 3) -> tuple[list[dict], dict]:
    """CPU seconds (all threads) of ``compute_band_stats`` and of the plain chunk read, median of
    ``repeats`` interleaved runs: what each costs in CPU work, whatever share of the cores the
    machine's other load leaves (wall time / CPU time is the cores the run got)."""
    path = str(ws.store)
    cases = {"compute_band_stats": lambda: stats_pass(path), "h5py read_direct_chunk": lambda: plain_h5py_read_chunks(path)}
    cpu: dict[str, list[float]] = {name: [] for name in cases}
    wall: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, run in cases.items():
            c0, t0 = _cpu_seconds(), time.perf_counter()
            run()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(_cpu_seconds() - c0)
    med = {name: median(v) for name, v in cpu.items()}
    cores = {name: median(cpu[name]) / median(wall[name]) for name in cases}
    rows = [
        row("2. stats CPU time", "compute_band_stats, CPU s (all threads)", med["compute_band_stats"], "s",
            baseline=med["h5py read_direct_chunk"], baseline_label="h5py read_direct_chunk CPU s",
            note=f"info; cores used: {cores['compute_band_stats']:.2f} vs {cores['h5py read_direct_chunk']:.2f}"),
    ]
    return rows, {"cpu_seconds": cpu, "wall_seconds": wall, "cores_used": cores}


def stats_stages(ws: Workspace, repeats: int = 3) -> tuple[list[dict], dict]:
    """Seconds of each stage of the statistics pass as ``compute_band_stats`` runs it on an
    uncompressed store, timed one by one on one thread over the whole store (median of
    ``repeats``), beside the whole ``compute_band_stats`` timed in the same rounds: opening the
    store and mapping it (``map_for_pass``), ``block_summary`` of each block where it lies
    (moments, min, max, the pixels offered to the percentile sample), releasing each block's
    pages, Chan's ``merge`` of the blocks, and the final percentiles."""
    names = ["open + map_for_pass", "block_summary (in place)", "release pages", "merge", "percentiles"]
    spent: dict[str, list[float]] = {name: [] for name in names}
    totals = []
    n = len(ws.tiles)
    block = max(8, MAPPED_BLOCK_BYTES // (BANDS * TILE * TILE * 4))  # the engine's mapped block
    for _ in range(repeats):
        took = dict.fromkeys(names, 0.0)
        t0 = time.perf_counter()
        store = CubeStore(ws.store)
        mapping = store.map_for_pass(np.arange(n))
        took["open + map_for_pass"] = time.perf_counter() - t0
        running = RunningBandStats(BANDS)
        sample = PixelSample(BANDS, n, TILE * TILE, 20000, 0)
        picks = sample.draw(n, TILE * TILE)
        for part in batched(n, block):
            t0 = time.perf_counter()
            moments, _ = block_summary(mapping.bytes, mapping.offsets[part], BANDS, TILE * TILE, picks[part],
                                       offers=sample.reserve(picks[part].size))
            t1 = time.perf_counter()
            mapping.release(mapping.offsets[part])
            t2 = time.perf_counter()
            running.merge(*moments)
            t3 = time.perf_counter()
            for name, seconds in zip(names[1:], (t1 - t0, t2 - t1, t3 - t2)):
                took[name] += seconds
        mapping.close()
        t0 = time.perf_counter()
        sample.percentiles(PERCENTILES)
        took["percentiles"] = time.perf_counter() - t0
        for name in names:
            spent[name].append(took[name])
        t0 = time.perf_counter()
        stats_pass(str(ws.store))
        totals.append(time.perf_counter() - t0)
    total = median(totals)
    medians = {name: median(t) for name, t in spent.items()}
    rows = [
        row("2. stats stages", f"{name}, s", seconds, "s", baseline=total, baseline_label="compute_band_stats total",
            note="ratio = share of the total; stages on one thread, the pass on the CPU count")
        for name, seconds in medians.items()
    ]
    return rows, {"stage_seconds": medians, "stats_total_seconds": total, "block_samples": block}


def bench_stats_memory(ws: Workspace, factor: int, repeats: int = 3) -> tuple[list[dict], dict]:
    """Peak RSS increase of ``stats_pass`` in a fresh process, for a store of S samples and of
    ``factor`` x S (built beside it), alternating; the naive float64 way on S for information."""
    n = len(ws.tiles)
    small, big = ws.root / "memory_small.h5", ws.root / "memory_big.h5"
    build_store(small, n, ws.tiles)
    build_store(big, factor * n, ws.tiles)
    target = "benchmarks.bench_data_layer:stats_pass"
    peaks: dict[str, list[float]] = {"S": [], "10S": []}
    for _ in range(repeats):
        peaks["S"].append(peak_rss_increase(target, {"store_path": str(small)})["increase_mb"])
        peaks["10S"].append(peak_rss_increase(target, {"store_path": str(big)})["increase_mb"])
    naive = peak_rss_increase("benchmarks.bench_data_layer:naive_float64_stats", {"store_path": str(small)})
    sizes = {"S": n * ws.tiles[0].nbytes / MB, "10S": factor * n * ws.tiles[0].nbytes / MB}
    _unlink(small)
    _unlink(big)
    s_mb, big_mb = median(peaks["S"]), median(peaks["10S"])
    rows = [
        row("2. stats memory", f"peak RSS increase, store {sizes['10S']:.0f} MB", big_mb, "MB",
            baseline=s_mb, baseline_label=f"store {sizes['S']:.0f} MB", max_ratio=1.10),
        row("2. stats memory", f"naive float64, store {sizes['S']:.0f} MB", naive["increase_mb"], "MB",
            baseline=sizes["S"], baseline_label="store size", note="ratio = multiple of the data"),
    ]
    return rows, {"peak_increase_mb": peaks, "store_mb": sizes, "naive_increase_mb": naive["increase_mb"]}


def stats_accuracy_stress(ws: Workspace) -> tuple[list[dict], dict]:
    """The stats pass on bands whose mean/std is 1e2, 1e3 and 1e4 (a bright band with little
    noise, e.g. raw counts), where a one-pass sum-of-squares loses digits: the std must still be
    within the issue's 1e-6 of numpy's float64."""
    rng = np.random.default_rng(1)
    ratios = [1e2, 1e3, 1e4]
    n = 256
    pool = rng.standard_normal((n, BANDS, TILE, TILE), dtype=np.float32)
    groups = np.array_split(np.arange(BANDS), len(ratios))
    for ratio, bands in zip(ratios, groups):
        pool[:, bands] += np.float32(ratio)
    path = ws.root / "stress.h5"
    build_store(path, n, pool)
    result = stats_pass(str(path))
    data = pool.astype(np.float64)
    want_std = data.std(axis=(0, 2, 3))
    rows, errors = [], {}
    for ratio, bands in zip(ratios, groups):
        err = _max_rel_error(np.asarray(result["std"])[bands], want_std[bands])
        errors[f"{ratio:g}"] = err
        rows.append(row("2. stats accuracy", f"std error, mean/std = {ratio:g} (stress)", err, "",
                        max_value=STATS_ACCURACY))
    _unlink(path)
    return rows, {"std_rel_error_by_mean_over_std": errors}


# ---- 3./4. random batch reads ------------------------------------------------------------------
def bench_random_read(ws: Workspace, store_path: Path, label: str, repeats: int, with_targets: bool) -> tuple[list[dict], dict]:
    """Random batches of ``READ_BATCH`` samples (warm cache) read with ``CubeStore.read`` (opens
    the file per call), ``read_samples`` (file kept open, reused buffer) and h5py fancy indexing
    (sorted indices), vs ``np.fromfile`` of the same bytes from a flat file holding the batches
    one after the other. Throughput is bytes of samples returned per second.

    A timed run reads ``BATCHES_PER_TIMING`` batches; the slow readers (compressed stores, h5py
    fancy indexing) read only the first ``SLOW_BATCHES`` / ``FANCY_BATCHES``, so a run stays short.
    Runs are short (tens of ms), so this benchmark takes ``2 * repeats + 1`` rounds.
    """
    n = len(ws.tiles)
    rng = np.random.default_rng(2)
    batches = [rng.choice(n, size=READ_BATCH, replace=False) for _ in range(BATCHES_PER_TIMING)]
    store = CubeStore(store_path)
    shape = (READ_BATCH, BANDS, TILE, TILE)
    count = int(np.prod(shape))
    flat = ws.root / f"batches_{label}.bin"
    with open(flat, "wb") as handle:
        for idx in batches:
            handle.write(ws.tiles[idx].tobytes())
    for b, idx in enumerate(batches):  # the same bytes on both sides
        assert np.array_equal(store.read(idx), np.fromfile(flat, np.float32, count, offset=b * count * 4).reshape(shape))
    fast = len(batches) if store.info["compression"] is None else SLOW_BATCHES
    n_batches = {"np.fromfile": len(batches), "CubeStore.read": fast, "read_samples": fast, "h5py fancy": FANCY_BATCHES}

    def fromfile(_):
        for b in range(n_batches["np.fromfile"]):
            np.fromfile(flat, dtype=np.float32, count=count, offset=b * count * 4).reshape(shape)

    def store_read(_):
        for idx in batches[: n_batches["CubeStore.read"]]:
            store.read(idx)

    def open_dataset():
        f = h5py.File(store_path, "r")
        return f, f["cubes"], np.empty(shape, dtype=np.float32)

    def samples(state):
        _, ds, buffer = state
        for idx in batches[: n_batches["read_samples"]]:
            read_samples(ds, idx, out=buffer)

    def fancy(state):
        _, ds, _ = state
        for idx in batches[: n_batches["h5py fancy"]]:
            ds[np.sort(idx)]

    def close(state):
        state[0].close()

    cases = [
        Case("np.fromfile", run=fromfile),
        Case("CubeStore.read", run=store_read),
        Case("read_samples", run=samples, setup=open_dataset, teardown=close),
        Case("h5py fancy", run=fancy, setup=open_dataset, teardown=close),
    ]
    times = time_interleaved(cases, repeats=2 * repeats + 1)
    gbps = {name: n_batches[name] * count * 4 / 1e9 / median(t) for name, t in times.items()}
    base = gbps["np.fromfile"]
    target = 0.9 if with_targets else None
    bench = "3. random batch read" if with_targets else "4. compressed read"
    rows = [
        row(bench, f"{label}: CubeStore.read, GB/s", gbps["CubeStore.read"], "GB/s", baseline=base,
            baseline_label="np.fromfile", min_ratio=target),
        row(bench, f"{label}: read_samples (open file)", gbps["read_samples"], "GB/s", baseline=base,
            baseline_label="np.fromfile",
            note="reads from a file opened with h5py (a compressed store's statistics pass): one preadv per sample where the layout allows"),
        row(bench, f"{label}: h5py fancy indexing", gbps["h5py fancy"], "GB/s", baseline=base,
            baseline_label="np.fromfile"),
    ]
    _unlink(flat)
    ms_per_batch = {name: 1e3 * median(t) / n_batches[name] for name, t in times.items()}
    return rows, {"ms_per_batch": ms_per_batch, "spread": {k: spread(v) for k, v in times.items()},
                  "batch_bytes": count * 4}


def bench_read_one(ws: Workspace, repeats: int, n_reads: int = 256) -> tuple[list[dict], dict]:
    """Information: one sample per call, as a DataLoader's ``__getitem__`` reads, warm cache:
    ``CubeStore.read_one`` and the call ``NormalisedTileDataset.raw`` makes today
    (``read_samples(file["cubes"], [i])[0]`` on a file kept open) vs ``np.fromfile`` of one
    sample's bytes from a flat file of the same samples."""
    n = len(ws.tiles)
    order = np.random.default_rng(3).integers(0, n, size=n_reads)
    sample_shape = ws.tiles.shape[1:]
    count = int(np.prod(sample_shape))
    flat = ws.root / "one_sample_reads.bin"
    ws.tiles[order].tofile(flat)
    store = CubeStore(ws.store)
    assert all(np.array_equal(store.read_one(int(i)), ws.tiles[i]) for i in order[:8])

    def fromfile(_):
        for k in range(n_reads):
            np.fromfile(flat, dtype=np.float32, count=count, offset=k * count * 4).reshape(sample_shape)

    def read_one(_):
        for i in order:
            store.read_one(int(i))

    def open_file():
        return h5py.File(ws.store, "r")

    def dataset_call(f):
        for i in order:
            read_samples(f["cubes"], [i])[0]

    cases = [
        Case("np.fromfile", run=fromfile),
        Case("CubeStore.read_one", run=read_one),
        Case("read_samples(f['cubes'], [i])", run=dataset_call, setup=open_file, teardown=lambda f: f.close()),
    ]
    times = time_interleaved(cases, repeats=2 * repeats + 1)
    us = {name: 1e6 * median(t) / n_reads for name, t in times.items()}
    rows = [
        row("3. one-sample read", f"{name}, us per sample", us[name], "us", baseline=us["np.fromfile"],
            baseline_label="np.fromfile", note="info; ratio = time / fromfile's")
        for name in ("CubeStore.read_one", "read_samples(f['cubes'], [i])")
    ]
    _unlink(flat)
    return rows, {"us_per_sample": us, "spread": {k: spread(v) for k, v in times.items()}}


def bench_compression(ws: Workspace, repeats: int) -> tuple[list[dict], dict]:
    """Stores ingested with lzf and gzip-4: ingestion MB/s (one run each, vs the uncompressed
    one in the same rounds is in benchmark 1), size on disk, and the random batch read."""
    rows, details = [], {}
    for compression in ("lzf", "gzip-4"):
        path = ws.root / f"store_{compression}.h5"
        start = time.perf_counter()
        ingest_folder(ws.raw_float32, path, IngestionParams(tile_size=TILE, compression=compression, show_progress=False))
        seconds = time.perf_counter() - start
        size_ratio = path.stat().st_size / ws.store.stat().st_size
        rows.append(row("4. compressed store", f"{compression}: ingestion MB/s (one run)", ws.tile_bytes / MB / seconds,
                        "MB/s", note=f"file is {size_ratio:.2f}x the uncompressed store"))
        read_rows, read_details = bench_random_read(ws, path, compression, repeats, with_targets=False)
        rows += read_rows
        details[compression] = {"ingest_seconds": seconds, "size_ratio": size_ratio, "read": read_details}
        _unlink(path)
    return rows, details


# ---- entry point -------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_data_layer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=float, default=128,
                        help="float32 source data in MiB (files of 64 x 256 x 256); the store S is the same size (default 128)")
    parser.add_argument("--memory-factor", type=int, default=10, help="the big store of the memory test is this x S (default 10)")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds per benchmark, after one warm-up round (default 5)")
    parser.add_argument("--only", default="", help="comma-separated steps to run (e.g. ingestion,stats_stages); default all")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    machine = machine_info()
    rows: list[dict] = []
    details: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench_data_layer_") as tmp:
        ws = make_workspace(Path(tmp), args.size_mb)
        steps = [
            ("ingestion", lambda: bench_ingestion(ws, args.repeats)),
            ("ingestion_stages", lambda: ingestion_stages(ws)),
            ("stats", lambda: bench_stats(ws, args.repeats)),
            ("stats_cpu_time", lambda: stats_cpu_time(ws)),
            ("stats_stages", lambda: stats_stages(ws)),
            ("stats_memory", lambda: bench_stats_memory(ws, args.memory_factor)),
            ("stats_accuracy_stress", lambda: stats_accuracy_stress(ws)),
            ("random_read", lambda: bench_random_read(ws, ws.store, "uncompressed", args.repeats, with_targets=True)),
            ("read_one", lambda: bench_read_one(ws, args.repeats)),
            ("compression", lambda: bench_compression(ws, args.repeats)),
        ]
        only = {name for name in args.only.split(",") if name}
        unknown = only - {name for name, _ in steps}
        if unknown:
            raise SystemExit(f"--only: unknown step(s) {sorted(unknown)}; steps: {[name for name, _ in steps]}")
        for name, step in steps:
            if only and name not in only:
                continue
            step_rows, step_details = step()
            rows += step_rows
            details[name] = step_details
    return {
        "name": NAME,
        "machine": machine,
        "params": {**vars(args), "num_samples": len(ws.tiles), "tile_shape": [BANDS, TILE, TILE],
                   "store_mb": ws.tile_bytes / MB},
        "seconds": round(time.perf_counter() - started, 1),
        "rows": rows,
        "details": details,
    }


if __name__ == "__main__":
    raise SystemExit(run_module_cli(main))
