"""``unet_temporal`` against persistence and linear interpolation on the synthetic ``sits_demo`` series.

One `kedro run --pipeline demo_data` and one `kedro run --pipeline unet_temporal --params
dataset=sits_demo` in a throw-away copy of the project's configuration (nothing in the project's
own data/ changes). The evaluation scores the three methods on the same held-out date of each
test series, on that date's valid pixels, in the store's units (reflectance): MSE, MAE, SAM, PSNR.
Every setting is the family's parameter file, except the epochs given here.

    python -m benchmarks.bench_unet_temporal               # 30 epochs, ~5 min on 2 busy cores
    python -m benchmarks.bench_unet_temporal --quick       # 2 epochs, a smoke run (unet_temporal_quick.json)
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from benchmarks.bench_unet import _kedro, _project
from benchmarks.common import machine_info, row, run_module_cli
from spectral_training.io.versioned import latest_version

NAME = "unet_temporal"
DATASET = "sits_demo"
BASELINES = ("persistence", "linear_interpolation")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_unet_temporal", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--quick", action="store_true", help="2 epochs; writes unet_temporal_quick.json")
    args = parser.parse_args(argv)
    epochs = 2 if args.quick else args.epochs
    params = (f"dataset={DATASET},unet_temporal.train.progress=false,unet_temporal.evaluation.show_progress=false,"
              f"unet_temporal.train.epochs={epochs}")
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench_unet_temporal_") as tmp:
        root = _project(Path(tmp) / "project")
        seconds["demo_data"] = _kedro(root, "demo_data")
        seconds["unet_temporal"] = _kedro(root, "unet_temporal", params)
        reports = root / "data" / "08_reporting" / DATASET / "unet_temporal"
        metrics = json.loads(latest_version(reports / "temporal_metrics.json").read_text())
        history = json.loads(latest_version(reports / "history.json").read_text())

    summary = metrics["summary"]
    note = f"epoch {metrics['checkpoint_epoch']}, {metrics['num_series']} test series, {metrics['scored_pixels']} px"
    rows = [row(f"unet_temporal vs {b}", f"held-out date {key} (store units)", summary["model"][key], "",
                baseline=summary[b][key], baseline_label=b, max_ratio=1.0, note=note)
            for b in BASELINES for key in ("mse", "mae")]
    details = {
        "summary": summary,
        "per_band_table": metrics["per_band_table"],
        "checkpoint_epoch": metrics["checkpoint_epoch"],
        "num_series": metrics["num_series"],
        "scored_pixels": metrics["scored_pixels"],
        "loss": {"first_train": history[0]["train_loss"], "last_train": history[-1]["train_loss"],
                 "first_val": history[0]["val_loss"], "best_val": min(h["val_loss"] for h in history),
                 "epochs_run": len(history)},
        "seconds": seconds,
    }
    return {"name": f"{NAME}_quick" if args.quick else NAME, "rows": rows, "details": details,
            "params": {"epochs": epochs, "dataset": DATASET}, "machine": machine_info()}


if __name__ == "__main__":
    raise SystemExit(run_module_cli(main))
