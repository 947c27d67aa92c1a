"""Speed and memory benchmarks: every figure is measured beside its baseline, in one run.

Each ``bench_<name>.py`` module has ``main(argv) -> dict`` (see :mod:`benchmarks.common`);
``python -m benchmarks.run_all`` runs them all and writes ``benchmarks/results/<name>.json``.
"""
