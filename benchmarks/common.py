"""Shared benchmark helpers: interleaved timing, peak memory in a fresh process, results.

The contract of a benchmark module ``benchmarks/bench_<name>.py``::

    def main(argv: list[str] | None = None) -> dict:
        # returns {"name": "<name>", "rows": [row(...), ...], "params": {...}, "details": {...}}

Every row holds one figure, the baseline it is compared with (measured in the same run), their
ratio, the target and PASS / FAIL (or "info" when there is no target). The machine is shared and
noisy, so a figure and its baseline are always timed interleaved, round after round, and the
medians are compared: a burst of load then hits both sides alike.

Peak memory is measured in a fresh Python process (``python -m benchmarks.common --peak-rss``),
so that nothing the parent allocated before counts: the child resets its peak RSS (Linux
``/proc/self/clear_refs``) just before the call and reads ``VmHWM`` just after it.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = Path(__file__).resolve().parent / "results"
# Environment that caps torch, oneDNN, MKL (torch's fp32 matmuls), numpy and numba (the statistics
# kernels, compiled for x86-64-v3: AVX2 and FMA) at AVX2 on an AVX-512 CPU: the kernels (and the
# bf16 emulation) of the AVX2 kind of machine (MACHINE.md), on this machine's cores, caches and clock.
AVX2_CAP = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",
    "NUMBA_CPU_NAME": "x86-64-v3",
}
MB = 1e6  # throughputs are reported in decimal MB/s and GB/s, as MACHINE.md does


# ---- timing ------------------------------------------------------------------------------------
@dataclass
class Case:
    """One thing to time: ``run(state)``, where ``state = setup()`` is made untimed before it.

    ``teardown(state)`` runs untimed after it (delete the store a run wrote, for instance).
    """

    name: str
    run: Callable[[Any], Any]
    setup: Callable[[], Any] | None = None
    teardown: Callable[[Any], None] | None = None


def time_interleaved(cases: Sequence[Case], repeats: int = 5, warmup: int = 1) -> dict[str, list[float]]:
    """Seconds of each case per round; rounds run every case once, in a rotating order.

    The first ``warmup`` rounds are not recorded (page cache, imports, lazy allocations).
    """
    times: dict[str, list[float]] = {case.name: [] for case in cases}
    for round_ in range(warmup + repeats):
        shift = round_ % len(cases)
        for case in list(cases[shift:]) + list(cases[:shift]):
            state = case.setup() if case.setup else None
            start = time.perf_counter()
            case.run(state)
            elapsed = time.perf_counter() - start
            if case.teardown:
                case.teardown(state)
            if round_ >= warmup:
                times[case.name].append(elapsed)
    return times


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def spread(values: Sequence[float]) -> float:
    """(max - min) / median: how noisy the repeats were."""
    mid = median(values)
    return float((max(values) - min(values)) / mid) if mid > 0 else 0.0


# ---- memory ------------------------------------------------------------------------------------
def _proc_status_kib(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _peak_rss_child(target: str, kwargs: dict) -> dict:
    """Runs in the child: import ``module:function``, call it once, report the RSS increase."""
    module_name, func_name = target.split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    rss_before = _proc_status_kib("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # reset VmHWM (peak RSS) to the current RSS
        reset = True
    except OSError:
        reset = False  # then VmHWM also holds the peak of the imports: the increase is a lower bound
    start = time.perf_counter()
    func(**kwargs)
    seconds = time.perf_counter() - start
    peak = _proc_status_kib("VmHWM")
    return {
        "rss_before_mb": rss_before * 1024 / MB,
        "peak_rss_mb": peak * 1024 / MB,
        "increase_mb": max(0, peak - rss_before) * 1024 / MB,
        "seconds": seconds,
        "peak_was_reset": reset,
    }


def peak_rss_increase(target: str, kwargs: dict, timeout: float = 600) -> dict:
    """Peak RSS increase (MB) of ``module:function(**kwargs)`` called once in a fresh process.

    ``kwargs`` must be JSON-serialisable; the module must be importable from the project root.
    Returns the child's report (``increase_mb``, ``peak_rss_mb``, ``seconds``, ...).
    """
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.common", "--peak-rss", target, json.dumps(kwargs)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))},
    )
    if proc.returncode != 0:
        raise RuntimeError(f"peak-RSS child for {target} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---- result rows -------------------------------------------------------------------------------
def row(
    benchmark: str,
    figure: str,
    value: float,
    unit: str,
    *,
    baseline: float | None = None,
    baseline_label: str = "",
    min_ratio: float | None = None,
    max_ratio: float | None = None,
    max_value: float | None = None,
    note: str = "",
) -> dict:
    """One line of the results table, with PASS/FAIL when a target is given, else "info".

    Targets: ``min_ratio`` (value / baseline must be at least this: throughputs),
    ``max_ratio`` (at most this: memory growth), ``max_value`` (value itself at most: errors).
    """
    ratio = value / baseline if baseline not in (None, 0) else None
    target, ok = "", None
    if min_ratio is not None:
        target, ok = f">= {min_ratio:g}x", ratio is not None and ratio >= min_ratio
    elif max_ratio is not None:
        target, ok = f"<= {max_ratio:g}x", ratio is not None and ratio <= max_ratio
    elif max_value is not None:
        target, ok = f"<= {max_value:g}", value <= max_value
    return {
        "benchmark": benchmark,
        "figure": figure,
        "value": _round(value),
        "unit": unit,
        "baseline": _round(baseline) if baseline is not None else None,
        "baseline_label": baseline_label,
        "ratio": _round(ratio) if ratio is not None else None,
        "target": target,
        "result": "info" if ok is None else ("PASS" if ok else "FAIL"),
        "note": note,
    }


def _round(x: float | None, digits: int = 4) -> float | None:
    if x is None or not math.isfinite(x) or x == 0:
        return x
    return float(f"{x:.{digits}g}")


def _fmt(x: float | None) -> str:
    if x is None:
        return ""
    if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e6):
        return f"{x:.2e}"
    return f"{x:.3g}" if abs(x) < 100 else f"{x:.0f}"


def markdown_table(rows: Sequence[dict]) -> str:
    """The rows as a markdown table: benchmark, figure, value, baseline, ratio, target, result."""
    lines = [
        "| benchmark | figure | value | baseline | ratio | target | result |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        unit = f" {r['unit']}" if r["unit"] else ""
        baseline = f"{_fmt(r['baseline'])}{unit} ({r['baseline_label']})" if r["baseline"] is not None else ""
        ratio = f"{r['ratio']:.3g}x" if r["ratio"] is not None else ""
        figure = r["figure"] + (f" — {r['note']}" if r["note"] else "")
        lines.append(
            f"| {r['benchmark']} | {figure} | {_fmt(r['value'])}{unit} | {baseline} | {ratio} | {r['target']} | {r['result']} |"
        )
    return "\n".join(lines)


# ---- results files -----------------------------------------------------------------------------
def machine_info() -> dict:
    """What the figures were measured on, and how loaded the machine was when the run started.

    With torch installed, also the CPU capability torch dispatches to (``AVX2``, ``AVX512``, ...)
    and whether mkldnn runs bf16 natively: the two facts that decide whether bf16 pays on a CPU.
    """
    import h5py
    import numpy as np

    info = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "python": platform.python_version(),
        "numpy": np.__version__,
        "h5py": h5py.__version__,
        "hdf5": h5py.version.hdf5_version,
        "platform": platform.platform(),
    }
    capped = {name: os.environ[name] for name in AVX2_CAP if os.environ.get(name)}
    if capped:
        info["isa_cap"] = capped
    try:
        import torch
    except ImportError:
        return info
    info.update(
        torch=torch.__version__,
        torch_threads=torch.get_num_threads(),
        cpu_capability=torch.backends.cpu.get_cpu_capability(),
        mkldnn_bf16=bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
    )
    return info


def _cpu_model() -> str | None:
    """The CPU's model name as /proc/cpuinfo gives it (Linux), else platform's guess."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def write_results(payload: dict, results_dir: Path = RESULTS_DIR) -> Path:
    """Write ``<results_dir>/<payload['name']>.json`` atomically (temp file + rename)."""
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{payload['name']}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=_json_default) + "\n")
    tmp.replace(path)
    return path


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")


def machine_line(m: dict) -> str:
    """One sentence naming the machine of a ``machine_info()`` dict: CPU, capability, versions."""
    cpu = f"{m.get('cpus')} CPUs ({m.get('cpu_model') or 'model unknown'})"
    if m.get("cpu_capability"):
        cpu += f", torch CPU capability {m['cpu_capability']}"
    if m.get("mkldnn_bf16") is not None:  # results written before it was recorded lack it
        cpu += f", mkldnn bf16 {'native' if m['mkldnn_bf16'] else 'not supported'}"
    if m.get("isa_cap"):
        cpu += (", instruction set capped to emulate the AVX2 kind ("
                + ", ".join(f"{k}={v}" for k, v in m["isa_cap"].items()) + ")")
    versions = f"numpy {m.get('numpy')}, h5py {m.get('h5py')} (HDF5 {m.get('hdf5')})"
    if m.get("torch"):
        versions = f"torch {m['torch']} ({m.get('torch_threads')} threads), " + versions
    return f"{cpu}; load average at start {m.get('load_average')}; {versions}; Python {m.get('python')}"


def report_text(payload: dict) -> str:
    """A markdown section for one benchmark module: heading, machine line, table."""
    took = f", {payload['seconds']:.0f} s" if payload.get("seconds") else ""
    head = (
        f"## {payload['name']}\n\n"
        f"{machine_line(payload.get('machine', {}))}. Measured {payload.get('machine', {}).get('time', '?')}{took}; "
        f"medians of interleaved repeats, ratios are value / baseline.\n"
    )
    return head + "\n" + markdown_table(payload["rows"]) + "\n"


def results_markdown(sections: Sequence[str], *, command: str, machine: dict, load_at_end: Sequence[float],
                     seconds: float) -> str:
    """The whole ``benchmarks/RESULTS.md``: how it was made and on what, then one section per module."""
    head = (
        "# Benchmark results\n\n"
        "Written by `make bench` (`python -m benchmarks.run_all`); do not edit by hand. Every figure is timed "
        "beside its baseline in the same run (interleaved rounds, medians), and the ratio is value / baseline; "
        "a target is PASS or FAIL, a row without one is information.\n\n"
        f"- command: `{command}`\n"
        f"- finished: {time.strftime('%Y-%m-%dT%H:%M:%S%z')}, {seconds / 60:.1f} min\n"
        f"- machine: {machine_line(machine)}\n"
        f"- load average at the end: {[round(v, 2) for v in load_at_end]}\n"
        f"- platform: {machine.get('platform')}\n"
    )
    return head + "\n" + "\n".join(sections)


def run_module_cli(main: Callable[[list[str] | None], dict], argv: list[str] | None = None) -> int:
    """What ``python -m benchmarks.bench_<name>`` does: run, write the JSON, print the table."""
    payload = main(argv)
    path = write_results(payload)
    print(report_text(payload))
    print(f"results written to {path.relative_to(PROJECT_ROOT)}")
    return 0


def _child_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="internal: peak RSS of one call, in this fresh process")
    parser.add_argument("--peak-rss", nargs=2, metavar=("MODULE:FUNCTION", "KWARGS_JSON"), required=True)
    args = parser.parse_args(argv)
    target, kwargs = args.peak_rss
    print(json.dumps(_peak_rss_child(target, json.loads(kwargs))))
    return 0


if __name__ == "__main__":
    raise SystemExit(_child_main())
