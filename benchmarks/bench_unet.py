"""The convolutional families on the demo scene, through the real `kedro run` pipelines.

What it answers, on Indian Pines as the demo ingests it (32 px tiles), each run a `kedro run` in a
throw-away copy of the project's configuration (nothing in the project's own data/ changes):

(a) ``unet_mim`` against the reconstruction baselines (per-band training mean, mean of the visible
    neighbour patches), same masks, masked values only, physical units;
(b) the spectral MAE (``mae_pretrain``) scored the same way, so both pretraining families sit in
    one table (each with its own masking geometry: the baselines are re-measured on each family's
    masks, so compare each model with the baselines of its own row group);
(c) ``unet_seg`` from scratch against ``unet_seg`` from the ``unet_mim`` encoder of (a): mean IoU,
    pixel accuracy on the test tiles' labelled pixels.

Every run uses the family's demo parameters (its parameter file), except the epochs given here.

    python -m benchmarks.bench_unet                 # ~10 min on 2 busy cores
    python -m benchmarks.bench_unet --quick         # 2 epochs each, a smoke run (writes unet_quick.json)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import PROJECT_ROOT, machine_info, row, run_module_cli
from spectral_training.io.versioned import latest_version

NAME = "unet"
DATASET = "indian_pines"
QUIET = "train.progress=false,evaluation.show_progress=false"


def _project(root: Path) -> Path:
    """A copy of the project's configuration with an empty data/ tree (as tests/project_copy.py)."""
    root.mkdir(parents=True)
    for name in ("pyproject.toml", ".telemetry"):
        shutil.copy(PROJECT_ROOT / name, root / name)
    shutil.copytree(PROJECT_ROOT / "conf", root / "conf", ignore=shutil.ignore_patterns("local"))
    (root / "conf" / "local").mkdir()
    (root / "src").mkdir()
    (root / "data").mkdir()
    return root


def _kedro(root: Path, pipeline: str, params: str = "") -> float:
    """Run one pipeline; returns its wall time (s). Raises with the output's tail when it fails."""
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1", "MPLBACKEND": "Agg"}
    command = [str(Path(sys.executable).with_name("kedro")), "run", "--pipeline", pipeline]
    if params:
        command += ["--params", params]
    print(f"bench_unet: kedro run --pipeline {pipeline} {params}", file=sys.stderr, flush=True)
    start = time.perf_counter()
    done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if done.returncode:
        raise RuntimeError(f"kedro run --pipeline {pipeline} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def _family_params(family: str, epochs: int, extra: str = "") -> str:
    quiet = ",".join(f"{family}.{key}" for key in QUIET.split(","))
    return f"{quiet},{family}.train.epochs={epochs}" + (f",{extra}" if extra else "")


def _json(root: Path, relative: str) -> dict:
    return json.loads(latest_version(root / relative).read_text())


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_unet", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pretrain-epochs", type=int, default=30)
    parser.add_argument("--seg-epochs", type=int, default=30)
    parser.add_argument("--no-mae", action="store_true", help="leave out the spectral MAE run (b)")
    parser.add_argument("--quick", action="store_true", help="2 epochs everywhere; writes unet_quick.json")
    args = parser.parse_args(argv)
    pre, seg = (2, 2) if args.quick else (args.pretrain_epochs, args.seg_epochs)
    reports = f"data/08_reporting/{DATASET}"
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench_unet_") as tmp:
        root = _project(Path(tmp) / "project")
        seconds["demo_data"] = _kedro(root, "demo_data")
        seconds["unet_mim"] = _kedro(root, "unet_mim", _family_params("unet_mim", pre))
        if not args.no_mae:
            seconds["mae_pretrain"] = _kedro(root, "mae_pretrain", _family_params("mae", pre))
        seconds["unet_seg_scratch"] = _kedro(root, "unet_seg", _family_params("unet_seg", seg))
        scratch = _json(root, f"{reports}/unet_seg/segmentation_metrics.json")
        seconds["unet_seg_from_mim"] = _kedro(root, "unet_seg", _family_params(
            "unet_seg", seg, f"unet_seg.model.checkpoint=data/06_models/{DATASET}/unet_mim_model.json"))
        pretrained = _json(root, f"{reports}/unet_seg/segmentation_metrics.json")
        mim = _json(root, f"{reports}/unet_mim/reconstruction_metrics.json")
        mae = None if args.no_mae else _json(root, f"{reports}/reconstruction_metrics.json")
        histories = {"unet_mim": _json(root, f"{reports}/unet_mim/history.json")}

    rows = []
    for label, metrics in (("unet_mim", mim), ("mae", mae)):
        if metrics is None:
            continue
        summary = metrics["summary"]
        for baseline in ("band_mean", "neighbour_patch"):
            rows.append(row(f"{label} vs {baseline}", "masked MSE (physical units)", summary["model"]["mse"], "",
                            baseline=summary[baseline]["mse"], baseline_label=baseline, max_ratio=1.0,
                            note=f"epoch {metrics['checkpoint_epoch']}, {metrics['num_samples']} test tiles"))
    rows.append(row("unet_seg", "test mean IoU", pretrained["mean_iou"], "", baseline=scratch["mean_iou"],
                    baseline_label="same U-Net from scratch", note="from the unet_mim encoder"))
    rows.append(row("unet_seg", "test pixel accuracy", pretrained["pixel_accuracy"], "",
                    baseline=scratch["pixel_accuracy"], baseline_label="same U-Net from scratch",
                    note="from the unet_mim encoder"))
    details = {
        "reconstruction": {"unet_mim": mim["summary"], **({"mae": mae["summary"]} if mae else {})},
        "checkpoint_epochs": {"unet_mim": mim["checkpoint_epoch"], **({"mae": mae["checkpoint_epoch"]} if mae else {})},
        "mask_ratio": {"unet_mim": mim["mask_ratio"], **({"mae": mae["mask_ratio"]} if mae else {})},
        "segmentation": {name: {"mean_iou": r["mean_iou"], "pixel_accuracy": r["pixel_accuracy"],
                                "per_class_iou": {c: v["iou"] for c, v in r["per_class"].items()},
                                "checkpoint_epoch": r["checkpoint_epoch"], "num_tiles": r["num_tiles"]}
                         for name, r in (("scratch", scratch), ("from_unet_mim", pretrained))},
        "unet_mim_loss": {"first_train": histories["unet_mim"][0]["train_loss"],
                          "last_train": histories["unet_mim"][-1]["train_loss"],
                          "first_val": histories["unet_mim"][0]["val_loss"],
                          "best_val": min(h["val_loss"] for h in histories["unet_mim"])},
        "seconds": seconds,
    }
    return {"name": f"{NAME}_quick" if args.quick else NAME, "rows": rows, "details": details,
            "params": {"pretrain_epochs": pre, "seg_epochs": seg, "dataset": DATASET, "with_mae": not args.no_mae},
            "machine": machine_info()}


if __name__ == "__main__":
    raise SystemExit(run_module_cli(main))
