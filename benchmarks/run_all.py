"""Run the benchmark modules, write ``benchmarks/results/<name>.json`` and ``benchmarks/RESULTS.md``.

Usage, from the project root (``make bench`` runs the first line)::

    python -m benchmarks.run_all                      # every benchmarks/bench_*.py (the slow ones train for minutes)
    python -m benchmarks.run_all --skip-slow          # all but bench_learning, bench_unet* and bench_sits: a few minutes
    python -m benchmarks.run_all data_layer mae       # only these modules
    python -m benchmarks.run_all --strict             # exit 1 when a target FAILs
    python -m benchmarks.run_all --emulate-avx2 --skip-slow   # the AVX2 kind's kernels on this CPU

``--emulate-avx2`` runs the same command again in a child process whose torch, oneDNN, MKL and numpy
are capped at AVX2 (``common.AVX2_CAP``), writing ``RESULTS-avx2.md`` and ``results-avx2/``: on an
AVX-512 machine this gives the kernels of the AVX2 kind (fp32 at AVX2 speed, bf16 emulated), not
that machine's clock or caches.

Each module's ``main([])`` runs with its default sizes (see the module's ``--help``). A module
that raises is reported and the others still run.

``RESULTS.md`` has one section per benchmark module, every row as value, baseline and ratio:
the modules this command ran with this run's figures, the others with the figures of their
last saved ``results/<name>.json``, marked with the time they were measured (or as never run).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

from benchmarks.common import (
    AVX2_CAP,
    PROJECT_ROOT,
    RESULTS_DIR,
    machine_info,
    report_text,
    results_markdown,
    write_results,
)

BENCH_DIR = Path(__file__).resolve().parent
REPORT = BENCH_DIR / "RESULTS.md"
# Modules that train models for minutes each; --skip-slow leaves them out.
SLOW_PREFIXES = ("learning", "unet", "sits")


def discover(only: list[str] | None = None) -> list[str]:
    """Module names ``benchmarks.bench_<name>``, sorted; ``only`` filters by ``<name>``."""
    names = sorted(p.stem for p in BENCH_DIR.glob("bench_*.py"))
    if only:
        missing = sorted(set(only) - {n.removeprefix("bench_") for n in names})
        if missing:
            raise SystemExit(f"no benchmark module for {missing}; modules: {[n.removeprefix('bench_') for n in names]}")
        names = [n for n in names if n.removeprefix("bench_") in only]
    return [f"benchmarks.{n}" for n in names]


def is_slow(module_name: str) -> bool:
    return module_name.removeprefix("benchmarks.bench_").startswith(SLOW_PREFIXES)


def earlier_section(module_name: str, why: str, results_dir: Path = RESULTS_DIR) -> str:
    """The section of a module not run now: its last saved results, marked as such."""
    name = module_name.removeprefix("benchmarks.bench_")
    path = results_dir / f"{name}.json"
    if not path.exists():
        return f"## {name}\n\nNot run ({why}); no saved results in {path.relative_to(PROJECT_ROOT)}.\n"
    payload = json.loads(path.read_text())
    when = payload.get("machine", {}).get("time", "at an unknown time")
    note = (f"**Not run by this command ({why}): the figures below are those of "
            f"`{path.relative_to(PROJECT_ROOT)}`, measured {when}.**\n\n")
    heading, _, rest = report_text(payload).partition("\n\n")
    return f"{heading}\n\n{note}{rest}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run_all", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("only", nargs="*", help="benchmark names to run (default: all), e.g. data_layer")
    parser.add_argument("--skip-slow", action="store_true",
                        help=f"leave out the modules that train for minutes ({', '.join(p + '*' for p in SLOW_PREFIXES)})")
    parser.add_argument("--strict", action="store_true", help="exit with status 1 when any target FAILs")
    parser.add_argument("--report", type=Path, default=REPORT, help=f"the markdown report to write (default {REPORT.relative_to(PROJECT_ROOT)})")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR,
                        help=f"where the JSON files go (default {RESULTS_DIR.relative_to(PROJECT_ROOT)})")
    parser.add_argument("--emulate-avx2", action="store_true",
                        help="run again with torch, oneDNN and numpy capped at AVX2, into RESULTS-avx2.md and results-avx2/")
    raw = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(raw)
    args.results_dir, args.report = args.results_dir.resolve(), args.report.resolve()  # relative to where it runs
    if args.emulate_avx2:
        return _run_capped([a for a in raw if a != "--emulate-avx2"])
    command = "python -m benchmarks.run_all " + " ".join(raw)

    started, machine = time.perf_counter(), machine_info()
    failed_targets, crashed, sections = [], [], []
    chosen = discover(args.only)
    for module_name in discover():
        if module_name not in chosen or (args.skip_slow and is_slow(module_name)):
            why = "--skip-slow" if module_name in chosen else "not named on the command line"
            sections.append(earlier_section(module_name, why, args.results_dir))
            continue
        print(f"running {module_name} ...", file=sys.stderr, flush=True)
        try:
            payload = importlib.import_module(module_name).main([])
        except Exception:
            crashed.append(module_name)
            text = f"## {module_name}\n\nFAILED TO RUN:\n```\n{traceback.format_exc()}```\n"
            print(text)
            sections.append(text)
            continue
        path = write_results(payload, args.results_dir)
        text = report_text(payload)
        sections.append(text)
        print(text)
        print(f"results: {path.relative_to(PROJECT_ROOT)}\n", flush=True)
        failed_targets += [f"{payload['name']}: {r['benchmark']} / {r['figure']}" for r in payload["rows"] if r["result"] == "FAIL"]
    report = results_markdown(sections, command=command.strip(), machine=machine, load_at_end=os.getloadavg(),
                              seconds=time.perf_counter() - started)
    args.report.write_text(report)
    print(f"report: {args.report}")
    if failed_targets:
        print("targets not met:\n" + "\n".join(f"- {f}" for f in failed_targets))
    if crashed:
        print("modules that crashed: " + ", ".join(crashed))
        return 2
    return 1 if (args.strict and failed_targets) else 0


def _run_capped(argv: list[str]) -> int:
    """This command again in a child process with the instruction set capped at AVX2 (set before
    torch and numpy are imported, which read it once)."""
    if not any(a.startswith("--report") for a in argv):
        argv += ["--report", str((BENCH_DIR / "RESULTS-avx2.md").relative_to(PROJECT_ROOT))]
    if not any(a.startswith("--results-dir") for a in argv):
        argv += ["--results-dir", str((BENCH_DIR / "results-avx2").relative_to(PROJECT_ROOT))]
    env = {**os.environ, **AVX2_CAP}
    return subprocess.run([sys.executable, "-m", "benchmarks.run_all", *argv], env=env, cwd=PROJECT_ROOT).returncode


if __name__ == "__main__":
    raise SystemExit(main())
