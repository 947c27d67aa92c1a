"""Learning quality of the model-family presets on the real demo scene (Indian Pines), block split.

What it answers (each run trained from scratch in this process, same data, seeds and epochs):

(a) the ``cnn`` preset (a small timm CNN, resnet18);
(b) the ``vit`` preset (timm ``vit_tiny_patch16_224`` made small: 8 px input, 2 px patches, 6 blocks);
(c) the SAME ViT with the ``cnn`` preset's settings (Adam 1e-3, step schedule, no warmup, no label
    smoothing, no Mixup/CutMix, no layer decay): the failure the presets exist to prevent;
(d) ``finetune`` (full, layer decay) of a tiny spectral MAE pretrained here on the same store's
    train split, against the same encoder from random weights (``init: scratch``), same settings;
(e) a linear probe on the MAE's frozen features, against scikit-learn's logistic regression on
    each tile's mean spectrum (standardised with the train band stats; C picked on val), and
    against a linear probe on the frozen *random* encoder (what the features alone are worth).

Every classifier is scored by its family's own evaluation on the test split at its best
validation macro-F1 epoch (``best.pt``, the pipeline default); test figures at the last epoch
are kept in ``details`` too, since the val split that picks the epoch is small.

Why tile 8 px / stride 4 / block 16 px rather than 16 / 8 / 32: the scene is 145 x 145 px
(4 files of ~72 x 72 px), so 32 px blocks give ~36 blocks and the hashed block split leaves a
val split of ~7 tiles of 2 classes and a test split of ~18 tiles of 5 classes (``details.census``
counts both set-ups at run time). Smaller tiles and blocks give ~100 blocks and splits that
cover most classes. The numbers stay small: read the results as a smoke test of the recipes,
not as a leaderboard.

Every run trains in fp32 (``train.amp: "off"``), not the CPU default bf16 autocast: with torch
2.14.1 on the CPU, the bf16 backward of a 3x3 stride-2 convolution on a 1 x 1 input (resnet18's
layer3 at 8 px tiles, layer4 at 16 px) returns garbage weight gradients (NaN, or values ~1e33) on
the padding taps, so the cnn runs would skip steps or take garbage ones. Besides, emulated bf16 is
~400x slower on the AVX2 kind of machine (MACHINE.md).

    python -m benchmarks.bench_learning            # ~16 min on 2 quiet cores (30 min with the test suite alongside)
    python -m benchmarks.bench_learning --quick    # ~1.5 min smoke run; writes learning_quick.json, not learning.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import RESULTS_DIR, machine_info, row, run_module_cli
from spectral_training import families
from spectral_training.cubes.demo import indian_pines_files, load_indian_pines
from spectral_training.cubes.ingest import IngestionParams, ingest_folder
from spectral_training.cubes.splits import block_split_of
from spectral_training.cubes.stats import compute_band_stats
from spectral_training.cubes.store import CubeStore
from spectral_training.cubes.tiling import majority_labels, tile_windows
from spectral_training.families.classifier.labels import labelled_index
from spectral_training.families.params import deep_merge
from spectral_training.families.runs import train_family
from spectral_training.metrics.classification import metrics_from_confusion

NAME = "learning"
PROJECT_ROOT = Path(__file__).resolve().parents[1]
FAMILIES_CONF = PROJECT_ROOT / "conf" / "base" / "parameters" / "families"
CURVES_DIR = RESULTS_DIR / "learning"
SPLITS = {"train": 0.8, "val": 0.1, "test": 0.1}  # the ingestion default

# One architecture per question; (b) and (c) share VIT exactly (drop path included), (d)/(e) share MAE.
CNN = {"name": "resnet18"}
VIT = {"name": "vit_tiny_patch16_224", "image_size": 8, "drop_path_rate": 0.1, "kwargs": {"patch_size": 2, "depth": 6}}
MAE = {"variant": "tiny", "image_size": 8, "spatial_patch": 4, "spectral_patch": 20, "depth": 6, "embed_dim": 192,
       "num_heads": 3}
# What the cnn preset does not have and the vit preset does: switched off for (c).
CNN_SETTINGS_FOR_VIT = {"loss": {"label_smoothing": 0.0}, "mixup": None, "train": {"layer_decay": None}}


# ---- data ----------------------------------------------------------------------------------------
def split_census(tile: int, stride: int, block: int, grid: int) -> dict:
    """Labelled tiles and classes per split for a tiling, from the label maps alone (nothing stored)."""
    labels = load_indian_pines().labels
    rows, cols = np.array_split(np.arange(labels.shape[0]), grid), np.array_split(np.arange(labels.shape[1]), grid)
    found: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            part = labels[r[0] : r[-1] + 1, c[0] : c[-1] + 1]
            for y, x, h, w in tile_windows(*part.shape, tile, stride):
                label = int(majority_labels(part[None, y : y + h, x : x + w])[0])
                split = block_split_of(f"indian_pines_r{i}c{j}.h5@{y},{x}", SPLITS, block, tile)
                if label >= 0:
                    found.setdefault(split, []).append(label)
    return {s: {"tiles": len(v), "classes": len(set(v))} for s, v in sorted(found.items())}


def build_data(folder: Path, args: argparse.Namespace) -> dict:
    """Demo files -> store -> sample index (block split) -> train band stats, and the counts."""
    raw = folder / "raw" / "indian_pines"
    raw.mkdir(parents=True)
    for name, data in indian_pines_files(grid=args.grid).items():
        (raw / name).write_bytes(data)
    params = IngestionParams.from_dict({"tile_size": args.tile, "stride": args.stride, "split_block_px": args.block,
                                        "splits": SPLITS, "show_progress": False})
    report, index = ingest_folder(raw, folder / "store.h5", params)
    store = CubeStore(folder / "store.h5")
    stats = compute_band_stats(store, index.loc[index["split"] == "train", "store_index"].to_numpy(),
                               show_progress=False)
    labelled = index[index["label"] >= 0]
    counts = {"tiles_per_split": report["counts"]["samples_per_split"],
              "labelled_per_split": {s: int(n) for s, n in labelled["split"].value_counts().sort_index().items()},
              "classes_per_split": {s: int(n) for s, n in labelled.groupby("split")["label"].nunique().items()},
              "classes_in_scene": int(labelled["label"].nunique()), "bands": int(store.info["num_bands"])}
    return {"store": store, "index": index, "stats": stats, "counts": counts}


# ---- parameters ----------------------------------------------------------------------------------
def _yaml(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())


def family_params(family: str, *overrides: dict) -> dict:
    """The family's validated parameters: its file's block + overrides, merged over the training
    (and classifier) defaults, as ``kedro run`` resolves them."""
    block = copy.deepcopy(_yaml(FAMILIES_CONF / f"{family}.yml")[family])
    for extra in overrides:
        block = deep_merge(block, extra)
    defaults = [_yaml(PROJECT_ROOT / "conf" / "base" / "parameters_training_defaults.yml")["training_defaults"]]
    if family != "mae":
        defaults.append(_yaml(FAMILIES_CONF / "_classifier_defaults.yml")["classifier_defaults"])
    pipeline = {"mae": "mae_pretrain", "finetune": "finetune"}.get(family, "classify")
    return families.resolve(family, block, *defaults, pipeline=pipeline)


def run_settings(args: argparse.Namespace, epochs: int) -> dict:
    """What every run shares: epochs (no early stopping: comparable runs see the same epochs), the seed,
    autocast, quiet output, checkpoints at epoch ends only, never resuming an old run."""
    return {"train": {"epochs": epochs, "patience": None, "seed": args.seed, "amp": args.amp, "progress": False,
                      "checkpoint_every_steps": None, "resume": False},
            "loader": {"batch_size": args.batch, "num_workers": 0},
            "evaluation": {"show_progress": False}}


# ---- training and scoring ------------------------------------------------------------------------
def test_scores(metrics: dict) -> dict:
    """The headline test figures, with a bootstrap 95 % interval of the macro-F1."""
    out = {k: metrics[k] for k in ("accuracy", "macro_f1", "balanced_accuracy", "num_samples")}
    return {**out, "macro_f1_ci95": bootstrap_ci(metrics["confusion_matrix"])}


def bootstrap_ci(confusion: list[list[int]], rounds: int = 1000, seed: int = 0) -> list[float]:
    """2.5 and 97.5 percentiles of the macro-F1 over test sets resampled with replacement (the confusion
    matrix holds every (true, predicted) pair). Neighbouring tiles overlap and are correlated, so the
    real uncertainty is larger than this; it leaves out the training seed's share too."""
    cm = np.asarray(confusion, dtype=np.int64)
    k = len(cm)
    pairs = np.repeat(np.arange(k * k), cm.ravel())
    rng = np.random.default_rng(seed)
    values = [metrics_from_confusion(torch.as_tensor(
        np.bincount(rng.choice(pairs, size=len(pairs)), minlength=k * k).reshape(k, k)))["macro_f1"] or 0.0
        for _ in range(rounds)]
    return [round(float(v), 4) for v in np.percentile(values, [2.5, 97.5])]


BASELINE_RUNS = ("vit_cnn", "ft_scratch", "probe_scratch")  # drawn dashed in the curves
CLASSIFIER_EVALUATION = {"evaluation": {"explain_samples": 2}}  # 2 attention / Grad-CAM maps: the figures are dropped


def train_and_test(label: str, family_name: str, params: dict, data: dict, models_root: Path) -> dict:
    """Train one classifier run, score best.pt and last.pt on test; curves and timings."""
    family = families.get_family(family_name)
    started = time.perf_counter()
    setup = family.prepare(data["store"], data["index"], data["stats"], params)
    run = train_family(family, setup, params, models_root)
    train_s = time.perf_counter() - started
    tested = {}
    for which in ("best", "last"):
        settings = {**params, "evaluation": {**params["evaluation"], "checkpoint": which}}
        metrics, _, _ = family.evaluate(data["store"], data["index"], data["stats"], run.manifest, settings,
                                        run.result.history)
        tested[which] = test_scores(metrics)
    history = run.result.history
    out = {
        "label": label, "family": family_name, "run_name": run.run_name,
        "test": tested["best"], "test_at_last_epoch": tested["last"],
        "best_epoch": (run.result.best_epoch or 0) + 1, "epochs": len(history),  # 1-based
        "bad_steps": sum(h.get("bad_steps") or 0 for h in history), "stopped_reason": run.result.stopped_reason,
        "train_seconds": round(train_s, 1), "total_seconds": round(time.perf_counter() - started, 1),
        "curve": [{k: h.get(k) for k in ("epoch", "train_loss", "val_loss", "val_accuracy", "val_macro_f1", "lr",
                                          "seconds")} for h in history],
        "train": {k: params["train"].get(k) for k in ("optimizer", "lr", "scheduler", "warmup_epochs",
                                                       "weight_decay", "clip_grad_norm", "layer_decay")},
        "loss": params.get("loss"), "mixup": params.get("mixup"), "model": params["model"],
    }
    print(f"  {label}: test macro-F1 {out['test']['macro_f1']:.3f}, accuracy {out['test']['accuracy']:.3f}, "
          f"best epoch {out['best_epoch']}/{out['epochs']}, {out['train_seconds']:.0f} s", flush=True)
    return out


def logistic_regression(data: dict, seed: int) -> dict:
    """scikit-learn logistic regression on each tile's mean spectrum, standardised with the train
    band stats; balanced class weights (as the classifiers' class_weights); C picked on val macro-F1."""
    from sklearn.linear_model import LogisticRegression

    started = time.perf_counter()
    family = families.get_family("cnn")
    index = data["index"]
    space = family.label_space(data["store"], index, {"labels": {}})
    rows = labelled_index(index, space)
    mean, std = np.asarray(data["stats"]["mean"]), np.maximum(np.asarray(data["stats"]["std"]), 1e-6)
    spectra = data["store"].read(rows["store_index"].to_numpy()).mean(axis=(2, 3))
    x, y, split = (spectra - mean) / std, rows["label"].to_numpy(), rows["split"].to_numpy()

    def scores(model, which: str) -> dict:
        confusion = np.zeros((space.num_classes, space.num_classes), np.int64)
        np.add.at(confusion, (y[split == which], model.predict(x[split == which])), 1)
        return metrics_from_confusion(torch.as_tensor(confusion), list(space.names))

    fits = {}
    for c in (0.01, 0.1, 1.0, 10.0, 100.0):
        model = LogisticRegression(C=c, class_weight="balanced", max_iter=5000, random_state=seed)
        model.fit(x[split == "train"], y[split == "train"])
        fits[c] = (scores(model, "val")["macro_f1"] or 0.0, model)
    best_c = max(fits, key=lambda c: (fits[c][0], -c))
    test = scores(fits[best_c][1], "test")
    out = {"label": "(e) logistic regression, mean spectra", "C": best_c, "val_macro_f1": fits[best_c][0],
           "val_macro_f1_by_C": {str(c): round(f, 4) for c, (f, _) in fits.items()},
           "test": test_scores(test),
           "train_seconds": round(time.perf_counter() - started, 1)}
    print(f"  {out['label']}: test macro-F1 {test['macro_f1']:.3f}, accuracy {test['accuracy']:.3f} (C={best_c})",
          flush=True)
    return out


def pretrain_mae(args: argparse.Namespace, data: dict, models_root: Path) -> dict:
    """The tiny spectral MAE of (d)/(e), on the train split (labelled or not); test reconstruction
    error against the band-mean and neighbour-patch baselines."""
    family = families.get_family("mae")
    params = family_params("mae", {"model": MAE}, run_settings(args, args.mae_epochs),
                           {"train": {"patience": 10}, "evaluation": {"plot_samples": 1, "spectra_pixels": 1}})
    started = time.perf_counter()
    run = train_family(family, family.prepare(data["store"], data["index"], data["stats"], params), params,
                       models_root)
    train_s = time.perf_counter() - started
    metrics, _, _ = family.evaluate(data["store"], data["index"], data["stats"], run.manifest, params,
                                    run.result.history)
    summary = metrics["summary"]
    out = {"run_dir": run.manifest["run_dir"], "best_epoch": (run.result.best_epoch or 0) + 1,
           "epochs": len(run.result.history), "train_seconds": round(train_s, 1), "model": params["model"],
           "train": {k: params["train"].get(k) for k in ("lr", "warmup_epochs", "weight_decay", "epochs")},
           "test_mse": {name: summary[name].get("mse") for name in summary},
           "curve": [{k: h.get(k) for k in ("epoch", "train_loss", "val_loss", "seconds")}
                     for h in run.result.history]}
    print(f"  MAE: {out['epochs']} epochs, {train_s:.0f} s, test MSE {out['test_mse']}", flush=True)
    return out


# ---- report --------------------------------------------------------------------------------------
def plot_curves(runs: dict[str, dict], logreg: dict, mae: dict, path: Path) -> Path:
    """Validation macro-F1 and loss per epoch of every classifier run (the logistic regression's val
    macro-F1 as a line), and the MAE's losses."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(16, 4.8), constrained_layout=True)
    f1_ax, loss_ax, mae_ax = fig.subplots(1, 3)
    for key, run in runs.items():
        epochs = [h["epoch"] + 1 for h in run["curve"]]
        style = "--" if key in BASELINE_RUNS else "-"
        f1_ax.plot(epochs, [h["val_macro_f1"] for h in run["curve"]], style, label=run["label"])
        loss_ax.plot(epochs, [h["val_loss"] for h in run["curve"]], style, label=run["label"])
    f1_ax.set(title="validation macro-F1", xlabel="epoch", ylabel="macro-F1")
    loss_ax.set(title="validation loss (each run's own objective)", xlabel="epoch", yscale="log")
    f1_ax.axhline(logreg["val_macro_f1"], color="k", linestyle=":", label=f"{logreg['label']} (C={logreg['C']})")
    f1_ax.legend(fontsize=7)
    epochs = [h["epoch"] + 1 for h in mae["curve"]]
    mae_ax.plot(epochs, [h["train_loss"] for h in mae["curve"]], label="train")
    mae_ax.plot(epochs, [h["val_loss"] for h in mae["curve"]], label="val")
    mae_ax.set(title="spectral MAE pretraining loss", xlabel="epoch")
    mae_ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def _note(run: dict) -> str:
    test = run["test"]
    where = f", best epoch {run['best_epoch']}/{run['epochs']}" if "best_epoch" in run else f", C={run['C']}"
    low, high = test["macro_f1_ci95"]
    return (f"95 % bootstrap [{low:.2f}, {high:.2f}]; accuracy {test['accuracy']:.3f}{where}, "
            f"{run['train_seconds']:.0f} s")


def result_rows(runs: dict[str, dict], mae: dict) -> list[dict]:
    def f1(key: str) -> float:
        return runs[key]["test"]["macro_f1"] or 0.0

    def info(key: str, figure: str) -> dict:
        return row(NAME, figure, f1(key), "", note=_note(runs[key]))

    def versus(key: str, other: str, figure: str, target: bool) -> dict:
        return row(NAME, figure, f1(key), "", baseline=f1(other), baseline_label=runs[other]["label"],
                   min_ratio=1.0 if target else None, note=_note(runs[key]))

    return [
        info("cnn", f"(a) cnn preset, {CNN['name']}: test macro-F1"),
        versus("vit", "vit_cnn", f"(b) vit preset, {VIT['name']} (small): test macro-F1 vs (c)", True),
        info("vit_cnn", "(c) the same ViT with the cnn settings: test macro-F1"),
        versus("ft_pre", "ft_scratch", "(d) finetune from the demo MAE: test macro-F1 vs scratch", True),
        info("ft_scratch", "(d) the same encoder from scratch: test macro-F1"),
        versus("probe_pre", "logreg", "(e) linear probe on MAE features: test macro-F1 vs logistic regression", False),
        info("logreg", "(e) logistic regression on standardised mean spectra: test macro-F1"),
        versus("probe_scratch", "probe_pre", "(e) linear probe on a frozen random encoder: test macro-F1", False),
        row(NAME, "(d)/(e) the MAE itself: test MSE of the masked values (radiance DN^2)", mae["test_mse"]["model"], "",
            baseline=mae["test_mse"]["neighbour_patch"], baseline_label="neighbour-patch baseline",
            note=f"band-mean baseline {mae['test_mse']['band_mean']:.4g}; best epoch {mae['best_epoch']}/"
                 f"{mae['epochs']}, {mae['train_seconds']:.0f} s"),
    ]


def summary_markdown(runs: dict[str, dict]) -> str:
    lines = ["| run | test accuracy | test macro-F1 [95 % bootstrap] | best epoch | train s | "
             "test macro-F1 at last epoch |", "|---|---|---|---|---|---|"]
    for run in runs.values():
        last = run.get("test_at_last_epoch", {}).get("macro_f1")
        best = f"{run['best_epoch']}/{run['epochs']}" if "best_epoch" in run else f"C={run['C']} (val)"
        low, high = run["test"]["macro_f1_ci95"]
        lines.append(f"| {run['label']} | {run['test']['accuracy']:.3f} | {run['test']['macro_f1']:.3f} "
                     f"[{low:.2f}, {high:.2f}] | {best} | "
                     f"{run['train_seconds']:.0f} | {'' if last is None else f'{last:.3f}'} |")
    return "\n".join(lines)


def train_everything(args: argparse.Namespace, data: dict, models: Path) -> tuple[dict[str, dict], dict]:
    """Runs (a)-(e) in order (the MAE of (d)/(e) pretrained in between): {key: run}, the MAE."""
    shared = (run_settings(args, args.epochs), CLASSIFIER_EVALUATION)

    def classify(label: str, family: str, *overrides: dict) -> dict:
        return train_and_test(label, family, family_params(family, *overrides, *shared), data, models)

    runs = {"cnn": classify("(a) cnn preset", "cnn", {"model": CNN}),
            "vit": classify("(b) vit preset", "vit", {"model": VIT}),
            # (c): the cnn family's parameter file with the ViT's model block, as `--params family=cnn,
            # cnn.model.name=vit_...` would run it; what the cnn preset lacks is switched off explicitly.
            "vit_cnn": classify("(c) vit with cnn settings", "cnn", {"model": VIT}, CNN_SETTINGS_FOR_VIT)}
    mae = pretrain_mae(args, data, models)
    # the linear probe as the reference's main_linprobe: no layer decay, no weight decay, plain cross-entropy
    probe = {"train": {"layer_decay": None, "weight_decay": 0.0}, "loss": {"label_smoothing": 0.0}}
    for key, label, model, extra in [
        ("ft_pre", "(d) finetune, MAE init", {"mode": "full", "init": "pretrained"}, {}),
        ("ft_scratch", "(d) finetune, scratch init", {"mode": "full", "init": "scratch"}, {}),
        ("probe_pre", "(e) linear probe, MAE encoder", {"mode": "linear_probe", "init": "pretrained"}, probe),
        ("probe_scratch", "(e) linear probe, random encoder", {"mode": "linear_probe", "init": "scratch"}, probe),
    ]:
        runs[key] = classify(label, "finetune", {"model": {**model, "checkpoint": mae["run_dir"]}}, extra)
    return runs, mae


# ---- main ----------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_learning", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=30, help="epochs of every classifier run (default 30)")
    parser.add_argument("--mae-epochs", type=int, default=80, help="MAE pretraining epochs (default 80, patience 10)")
    parser.add_argument("--tile", type=int, default=8)
    parser.add_argument("--stride", type=int, default=4)
    parser.add_argument("--block", type=int, default=16, help="split_block_px (default 16)")
    parser.add_argument("--grid", type=int, default=2, help="demo files per side (the demo_data default, 2)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--amp", choices=["auto", "off"], default="off",
                        help="train.amp of every run (default off: fp32, see the module docstring)")
    parser.add_argument("--quick", action="store_true", help="smoke run (~1.5 min): 2 classifier epochs, 2 MAE epochs")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.mae_epochs = 2, 2
    torch.set_num_threads(args.threads)

    started = time.perf_counter()
    machine = machine_info()  # torch, its threads and the CPU capability included
    with tempfile.TemporaryDirectory(prefix="bench_learning_") as tmp:
        folder = Path(tmp)
        data = build_data(folder, args)
        print(f"data: {data['counts']}", flush=True)
        runs, mae = train_everything(args, data, folder / "models")
        runs["logreg"] = logistic_regression(data, args.seed)
        census = {"this run": split_census(args.tile, args.stride, args.block, args.grid),
                  "tile 16, stride 8, block 32": split_census(16, 8, 32, args.grid)}
        counts = data["counts"]
        data["store"].close()
        # the run folders lived in the temporary folder: say so rather than keep a dead path
        runs, mae = json.loads(json.dumps([runs, mae], default=str).replace(str(folder), "<tmp>"))
    curves = plot_curves({k: v for k, v in runs.items() if "curve" in v}, runs["logreg"], mae,
                         CURVES_DIR / ("curves_quick.png" if args.quick else "curves.png"))
    return {
        "name": NAME + ("_quick" if args.quick else ""),  # a smoke run never replaces the real figures
        "machine": machine,
        "params": vars(args),
        "seconds": round(time.perf_counter() - started, 1),
        "load_average_at_end": [round(v, 2) for v in os.getloadavg()],
        "rows": result_rows(runs, mae),
        "details": {"data": {"scene": "AVIRIS Indian Pines, 145 x 145 px, 200 bands", "tile": args.tile,
                             "stride": args.stride, "split_block_px": args.block, "splits": SPLITS, **counts},
                    "census": census, "mae": mae, "runs": runs, "summary_markdown": summary_markdown(runs),
                    "curves_png": str(curves.relative_to(PROJECT_ROOT)),
                    "architectures": {"cnn": CNN, "vit": VIT, "mae": MAE}},
    }


if __name__ == "__main__":
    raise SystemExit(run_module_cli(main))
