"""Health report of the environment and of a dataset's artifacts (no Kedro: paths and dicts in).

`kedro diagnostics` gathers the catalog's artifacts and prints :func:`format_report` of
:func:`collect`; each section says what is missing and how to produce it.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import numpy as np


def environment() -> dict[str, Any]:
    import h5py
    import torch

    from spectral_training.training.amp import cpu_has_native_bf16

    cuda = torch.cuda.is_available()
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda_available": cuda,
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "cpu_native_bf16": cpu_has_native_bf16()[1],
        "h5py": h5py.__version__,
        "hdf5": h5py.version.hdf5_version,
    }


def store_health(store, sample_index) -> dict[str, Any]:
    if store is None or not store.exists():
        return {"ok": False, "problem": "no cube store: run `kedro run --pipeline ingestion --params dataset=<name>`"}
    info = store.info
    size = store.path.stat().st_size
    report: dict[str, Any] = {"ok": True, "path": str(store.path), "size_mb": round(size / 1e6, 2), **info}
    report.pop("band_names", None)
    report.pop("wavelengths_nm", None)
    if sample_index is not None:
        report["samples_per_split"] = {k: int(v) for k, v in sample_index["split"].value_counts().items()}
        if len(sample_index) != info["num_samples"]:
            report["ok"] = False
            report["problem"] = (f"sample index lists {len(sample_index)} samples but the store holds "
                                 f"{info['num_samples']}: rerun the ingestion pipeline")
    if info["num_samples"]:
        probe = store.read(np.linspace(0, info["num_samples"] - 1, min(8, info["num_samples"])).astype(int))
        report["probe_finite"] = bool(np.isfinite(probe).all())
        report["ok"] = report["ok"] and report["probe_finite"]
    return report


def stats_health(band_stats: dict | None) -> dict[str, Any]:
    if band_stats is None:
        return {"ok": False, "problem": "no band stats: run `kedro run --pipeline normalisation_stats`"}
    std = np.asarray(band_stats["std"], dtype=float)
    mean = np.asarray(band_stats["mean"], dtype=float)
    zero = [band_stats["band_names"][i] for i in np.flatnonzero(~(std > 0))]
    finite = bool(np.isfinite(std).all() and np.isfinite(mean).all())
    return {"ok": finite, "bands": len(std), "split": band_stats.get("split"), "num_samples": band_stats.get("num_samples"),
            "zero_std_bands": zero, "finite": finite,
            "mean_range": [float(mean.min()), float(mean.max())], "std_range": [float(std.min()), float(std.max())]}


def transform_health(report: dict | None) -> dict[str, Any]:
    if report is None:
        return {"ok": False, "problem": "no transform report: run `kedro run --pipeline transform_validation`"}
    return {"ok": bool(report.get("passed")), "failed": report.get("failed", []),
            "checks": {c["name"]: c["passed"] for c in report.get("checks", [])}}


def checkpoint_health(manifest: dict | None, pipeline: str = "mae_pretrain") -> dict[str, Any]:
    if manifest is None:
        return {"ok": False, "problem": f"no trained model: run `kedro run --pipeline {pipeline}`"}
    from spectral_training.training.checkpoint import load_checkpoint

    path = manifest.get("last_checkpoint")
    if not path or not Path(path).is_file():
        return {"ok": False, "problem": f"the manifest names {path}, which does not exist"}
    checkpoint = load_checkpoint(path)
    history = checkpoint.get("history") or []
    meta = checkpoint.get("metadata", {})
    return {
        "ok": True,
        "path": path,
        "epoch": checkpoint["progress"]["epoch"],
        "global_step": checkpoint["progress"]["global_step"],
        "stopped_reason": checkpoint.get("stopped_reason"),
        "last_epoch_metrics": {k: v for k, v in (history[-1] if history else {}).items() if isinstance(v, (int, float))},
        "bands": len(meta.get("band_names", [])),
        "band_names": meta.get("band_names", [])[:5] + (["..."] if len(meta.get("band_names", [])) > 5 else []),
        "run_name": meta.get("run_name"),
        "family": meta.get("family"),
    }


def collect(store=None, sample_index=None, band_stats=None, transform_report=None, manifest=None,
            models: dict[str, dict | None] | None = None) -> dict[str, Any]:
    """The report; ``models`` maps a training pipeline to its model manifest (None: not trained)."""
    report = {
        "environment": environment(),
        "store": store_health(store, sample_index),
        "band_stats": stats_health(band_stats),
        "transform_report": transform_health(transform_report),
        "checkpoint": checkpoint_health(manifest),
    }
    for pipeline, other in (models or {}).items():
        if other is not None:
            report[f"checkpoint ({pipeline})"] = checkpoint_health(other, pipeline)
    return report


def format_report(report: dict[str, Any]) -> str:
    lines = []
    for section, values in report.items():
        status = "" if section == "environment" else ("  [ok]" if values.get("ok") else "  [PROBLEM]")
        lines.append(f"{section}{status}")
        for key, value in values.items():
            if key != "ok":
                lines.append(f"  {key}: {value}")
    return "\n".join(lines)
