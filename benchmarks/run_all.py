"""Run every benchmark module and write ``benchmarks/results/<name>.json``; print markdown tables.

Usage, from the project root::

    python -m benchmarks.run_all                      # every benchmarks/bench_*.py
    python -m benchmarks.run_all data_layer           # only bench_data_layer.py
    python -m benchmarks.run_all --strict             # exit 1 when a target FAILs

Each module's ``main([])`` runs with its default sizes (see the module's ``--help``). A module
that raises is reported and the others still run.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from pathlib import Path

from benchmarks.common import PROJECT_ROOT, report_text, write_results

BENCH_DIR = Path(__file__).resolve().parent


def discover(only: list[str] | None = None) -> list[str]:
    """Module names ``benchmarks.bench_<name>``, sorted; ``only`` filters by ``<name>``."""
    names = sorted(p.stem for p in BENCH_DIR.glob("bench_*.py"))
    if only:
        missing = sorted(set(only) - {n.removeprefix("bench_") for n in names})
        if missing:
            raise SystemExit(f"no benchmark module for {missing}; modules: {[n.removeprefix('bench_') for n in names]}")
        names = [n for n in names if n.removeprefix("bench_") in only]
    return [f"benchmarks.{n}" for n in names]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run_all", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("only", nargs="*", help="benchmark names to run (default: all), e.g. data_layer")
    parser.add_argument("--strict", action="store_true", help="exit with status 1 when any target FAILs")
    args = parser.parse_args(argv)

    failed_targets, crashed = [], []
    for module_name in discover(args.only):
        print(f"running {module_name} ...", file=sys.stderr, flush=True)
        try:
            payload = importlib.import_module(module_name).main([])
        except Exception:
            crashed.append(module_name)
            print(f"## {module_name}\n\nFAILED TO RUN:\n```\n{traceback.format_exc()}```\n")
            continue
        path = write_results(payload)
        print(report_text(payload))
        print(f"results: {path.relative_to(PROJECT_ROOT)}\n", flush=True)
        failed_targets += [f"{payload['name']}: {r['benchmark']} / {r['figure']}" for r in payload["rows"] if r["result"] == "FAIL"]
    if failed_targets:
        print("targets not met:\n" + "\n".join(f"- {f}" for f in failed_targets))
    if crashed:
        print("modules that crashed: " + ", ".join(crashed))
        return 2
    return 1 if (args.strict and failed_targets) else 0


if __name__ == "__main__":
    raise SystemExit(main())
