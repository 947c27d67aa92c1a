"""MAE benchmarks: train-step speed against a reference MAE, loader overhead, memory per variant.

1. **Train step** (forward + backward + AdamW) at the plain MAE geometry: tiny encoder (192 wide,
   12 blocks, 3 heads), decoder 4 blocks x 128 wide x 4 heads, 3 bands, 224 px, 16 px spatial
   patches, ``spectral_patch=3`` (one band group: 196 tokens), batch 32, our default
   ``mae_spectral`` loss. Images/s in fp32 and bf16 autocast at mask 0.75 and 0.0, timed
   interleaved with :class:`benchmarks.mae_reference.ReferenceMAE` (a re-implementation of the
   official ``models_mae.py``: conv patch embedding, masking after embedding, MSE loss) at the
   same configuration, and with ``torch.mm`` runs that measure this machine's matmul peak in the
   same rounds. Targets: ours >= reference in images/s (each dtype x mask) and our masking
   speedup (mask 0.75 vs 0.0) >= the reference's. FLOPs of one forward + backward are counted
   once with ``FlopCounterMode`` (untimed), giving the achieved share of the fp32 matmul peak.
   The cost of the loss alone (``mae_spectral`` vs a plain masked MSE, forward + backward on the
   same prediction) is timed too, and our model with the reference's masked MSE as its loss is
   timed in the same rounds (diagnosis: how much of any gap the loss explains), for information.
2. **Loader overhead**: train steps of a tiny MAE (32 bands, 64 px, 8 x 8 x 8 patches, decoder
   128 x 4, bf16 autocast as ``amp: auto`` does on the CPU) fed by ``make_loader`` over
   a real store (``NormalisedTileDataset``, normalisation transform; batch 16 as
   ``mae.loader`` in parameters/families/mae.yml), with 0 and 1 workers,
   against the same steps fed from pre-stacked, pre-normalised tensors in memory: >= 0.95x.
3. **Peak memory** of building a variant and running one fp32 forward + backward + AdamW step,
   each variant in a fresh process (``benchmarks.common.peak_rss_increase``), at a geometry every
   variant fits (default 30 bands, 100 px, 25 x 25 x 5 patches, mask 0.8, batch 2, the model's
   default decoder 512 x 8); and trainable parameters per variant at the reference set-up
   (30 bands, 500 px, 25 x 25 x 5) from ``mae_parameter_counts`` (meta device). For information.

Run alone: ``python -m benchmarks.bench_mae [--steps 10] [--threads 2]`` from the project root
(``--quick`` for a smoke run with few steps); about 7 minutes on a quiet machine. Before each
timed run a gate waits (untimed, within a budget) for other processes on this shared machine to
go quiet, see :class:`QuietGate`. The figures of the official MAE code on this machine
(MACHINE.md) are quoted beside ours, but only the side-by-side ratios are targets.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.common import (
    Case,
    machine_info,
    median,
    peak_rss_increase,
    row,
    run_module_cli,
    spread,
    time_interleaved,
)
from benchmarks.mae_reference import ReferenceMAE
from spectral_training.models import MAE_VARIANTS, build_mae, mae_parameter_counts

NAME = "mae"

# the plain MAE geometry of section 1
GEOMETRY = {"bands": 3, "image": 224, "spatial_patch": 16, "spectral_patch": 3, "batch": 32,
            "embed": "tiny: 192 x 12 blocks, 3 heads", "decoder": "128 x 4 blocks, 4 heads"}
DECODER = {"decoder_embed_dim": 128, "decoder_depth": 4, "decoder_num_heads": 4}
MASKS = (0.75, 0.0)
DTYPES = ("fp32", "bf16")
#: the official MAE code on this machine, from /work/shared/MACHINE.md (images/s; share of fp32 peak)
OFFICIAL = {("fp32", 0.75): (38, 0.61), ("fp32", 0.0): (15, 0.69), ("bf16", 0.75): (47, 0.76)}
OFFICIAL_MASKING_SPEEDUP = 2.5
MACHINE_MM_PEAK = {"fp32": 190e9, "bf16": 400e9}  # MACHINE.md, FLOP/s with 2 threads
# The same facts for the AVX2 kind of machine (MACHINE.md), where bf16 is emulated (~400x slower
# than fp32): there the bf16 cases are left out, since one bf16 step would take minutes.
OFFICIAL_AVX2 = {("fp32", 0.75): (25.9, None)}
MACHINE_MM_PEAK_AVX2 = {"fp32": 130e9}


def _adapt_to_this_cpu(args: argparse.Namespace) -> str:
    """fp32 only where bf16 is emulated (and the AVX2 kind's MACHINE.md figures); says which."""
    global DTYPES, OFFICIAL, MACHINE_MM_PEAK
    from spectral_training.training.amp import cpu_has_native_bf16

    native, why = cpu_has_native_bf16()
    if native:
        return f"bf16 native ({why})"
    DTYPES, OFFICIAL, MACHINE_MM_PEAK = ("fp32",), OFFICIAL_AVX2, MACHINE_MM_PEAK_AVX2
    args.loader_dtype = "fp32"
    return f"bf16 not native ({why}): fp32 cases only"
MM_SIZE = 2048


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def _autocast(dtype: str):
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=(dtype == "bf16"))


def _loss_of(out) -> torch.Tensor:
    return out["loss"] if isinstance(out, dict) else out[0]


def make_train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, dtype: str, mask_ratio: float | None):
    """One training step on a batch: zero grads, forward (autocast for bf16), backward, AdamW."""

    def step(x: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        with _autocast(dtype):
            out = model(x) if mask_ratio is None else model(x, mask_ratio=mask_ratio)
        _loss_of(out).backward()
        optimizer.step()

    return step


class MaskedMSELoss(torch.nn.Module):
    """Diagnostic stand-in for our ``loss_fn``: the reference's masked MSE, in the loss's layout.

    Takes ``(B, G, N, s, q)`` prediction and target, ``(B, G, N)`` mask (band padding ignored:
    the benchmark geometries have none); returns ``(loss, parts)`` like ``MAESpectralLoss``.
    """

    def forward(self, pred, target, mask, band_valid=None):
        loss = (pred.float() - target.float()) ** 2
        loss = (loss.mean(dim=(3, 4)) * mask).sum() / mask.sum().clamp_min(1.0)
        return loss, {"mse": loss}


def count_flops(model: torch.nn.Module, x: torch.Tensor, mask_ratio: float) -> int:
    """FLOPs of one fp32 forward + backward (matmuls, attention, convolutions), counted once."""
    model.zero_grad(set_to_none=True)
    with FlopCounterMode(display=False) as counter:
        _loss_of(model(x, mask_ratio=mask_ratio)).backward()
    model.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def matmul_case(dtype: str, reps: int) -> tuple[Case, float]:
    """A case of ``reps`` square ``torch.mm`` of MM_SIZE (the matmul peak); returns it and its FLOPs."""
    torch_dtype = torch.float32 if dtype == "fp32" else torch.bfloat16
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(MM_SIZE, MM_SIZE, generator=gen).to(torch_dtype)
    b = torch.randn(MM_SIZE, MM_SIZE, generator=gen).to(torch_dtype)
    out = torch.empty(MM_SIZE, MM_SIZE, dtype=torch_dtype)

    def run(_):
        for _ in range(reps):
            torch.mm(a, b, out=out)

    return Case(f"mm {dtype}", run=run), 2.0 * MM_SIZE**3 * reps


def _cpu_jiffies() -> tuple[int, int]:
    """(busy jiffies of the whole machine, busy jiffies of this process and its waited children)."""
    with open("/proc/stat") as handle:
        fields = [int(v) for v in handle.readline().split()[1:]]
    busy = sum(fields) - fields[3] - (fields[4] if len(fields) > 4 else 0)  # all but idle and iowait
    with open("/proc/self/stat") as handle:
        own = handle.read().rsplit(")", 1)[1].split()
    return busy, int(own[11]) + int(own[12])  # utime + stime of this process (all its threads)


class QuietGate:
    """Waits (untimed) until other processes use less than ``threshold`` cores, within a budget.

    The machine is shared: other people's jobs come in bursts of seconds, and a 2-thread torch
    step that loses a core to them stalls at every OpenMP barrier (3-10x slower, not 2x). Before
    each timed run this samples the machine's CPU use for ``sample_s``; while others are busy it
    waits, up to ``max_wait_s`` per run and ``budget_s`` in all (then it stops waiting, and the
    median has to cope). Both sides of every comparison pass the same gate.
    """

    def __init__(self, threshold: float = 0.35, sample_s: float = 0.3, max_wait_s: float = 8.0, budget_s: float = 120.0):
        self.threshold, self.sample_s, self.max_wait_s, self.budget_s = threshold, sample_s, max_wait_s, budget_s
        self.waited_s, self.runs, self.runs_waited, self.runs_unquiet = 0.0, 0, 0, 0
        self.hz = os.sysconf("SC_CLK_TCK")

    def others_busy(self) -> float:
        """Cores used by other processes over the next ``sample_s`` seconds."""
        busy0, own0 = _cpu_jiffies()
        t0 = time.perf_counter()
        time.sleep(self.sample_s)
        busy1, own1 = _cpu_jiffies()
        return max(0, (busy1 - busy0) - (own1 - own0)) / self.hz / (time.perf_counter() - t0)

    def __call__(self) -> None:
        self.runs += 1
        if self.budget_s <= self.waited_s:
            return
        start = time.perf_counter()
        while self.others_busy() > self.threshold:
            if time.perf_counter() - start > self.max_wait_s or self.waited_s + time.perf_counter() - start > self.budget_s:
                self.runs_unquiet += 1
                break
        spent = time.perf_counter() - start
        self.waited_s += spent
        self.runs_waited += spent > 1.5 * self.sample_s

    def summary(self) -> dict:
        return {"threshold_cores": self.threshold, "waited_s": round(self.waited_s, 1), "timed_runs": self.runs,
                "runs_that_waited": self.runs_waited, "runs_started_unquiet": self.runs_unquiet, "budget_s": self.budget_s}


def gated(cases: list[Case], gate: QuietGate | None) -> list[Case]:
    """The cases with the gate as their (untimed) setup."""
    if gate is None:
        return cases
    return [Case(c.name, run=c.run, setup=gate, teardown=c.teardown) for c in cases]


def time_rounds(cases: list[Case], repeats: int, warmup: int, budget_s: float, min_repeats: int = 5) -> dict[str, list[float]]:
    """``time_interleaved`` round by round (rotating order), stopping early on a time budget.

    Runs ``warmup`` untimed rounds, then up to ``repeats`` timed rounds; once ``min_repeats``
    rounds are in, it stops when ``budget_s`` seconds (warm-up included) have passed, so a
    heavily loaded machine gives fewer rounds rather than an endless run (the JSON keeps every
    round's seconds: ``details.<section>.seconds``).
    """
    started = time.perf_counter()
    time_interleaved(cases, repeats=0, warmup=warmup)
    times: dict[str, list[float]] = {case.name: [] for case in cases}
    for round_ in range(repeats):
        shift = round_ % len(cases)
        for name, values in time_interleaved(cases[shift:] + cases[:shift], repeats=1, warmup=0).items():
            times[name] += values
        if round_ + 1 >= min_repeats and time.perf_counter() - started > budget_s:
            break
    return times


def min_ratio_of(times: dict[str, list[float]], slow: str, fast: str) -> float:
    """``min(times[slow]) / min(times[fast])``: the ratio of the least-disturbed runs (load only slows)."""
    return min(times[slow]) / min(times[fast])


def source_fingerprint() -> dict[str, str]:
    """First 12 hex digits of the SHA-256 of the engine files these figures depend on (others edit them)."""
    import hashlib

    root = Path(__file__).resolve().parents[1] / "src" / "spectral_training"
    files = ["models/mae.py", "models/losses.py", "models/pos_embed.py", "cubes/dataset.py", "cubes/store.py",
             "cubes/transforms.py", "training/data.py"]
    return {f: hashlib.sha256((root / f).read_bytes()).hexdigest()[:12] for f in files if (root / f).exists()}


def paired_ratio(times: dict[str, list[float]], slow: str, fast: str) -> float:
    """Median over rounds of ``times[slow][i] / times[fast][i]`` (same round: same load)."""
    return median([s / f for s, f in zip(times[slow], times[fast])])


# ---- 1. train step -----------------------------------------------------------------------------
def bench_train_step(args: argparse.Namespace) -> tuple[list[dict], dict]:
    torch.manual_seed(0)
    g = GEOMETRY
    x = torch.randn(g["batch"], g["bands"], g["image"], g["image"])
    ours = build_mae("tiny", g["bands"], g["image"], spatial_patch=g["spatial_patch"],
                     spectral_patch=g["spectral_patch"], mask_ratio=0.75, **DECODER)
    ref = ReferenceMAE(img_size=g["image"], patch_size=g["spatial_patch"], in_chans=g["bands"], embed_dim=192, depth=12,
                       num_heads=3, mlp_ratio=4.0, norm_pix_loss=False, **DECODER)
    params = {"ours": sum(p.numel() for p in ours.parameters() if p.requires_grad),
              "reference": sum(p.numel() for p in ref.parameters() if p.requires_grad)}
    models = {"ours": ours, "reference": ref}

    # FLOPs per step, counted once, outside timing (bf16 does the same FLOPs)
    flops = {(impl, m): count_flops(model, x, m) for impl, model in models.items() for m in MASKS}

    # one model + optimizer per configuration, so a configuration never sees another's state
    cases, labels = [], {}
    for impl in models:
        for dtype in DTYPES:
            for m in MASKS:
                torch.manual_seed(0)
                model = (build_mae("tiny", g["bands"], g["image"], spatial_patch=g["spatial_patch"],
                                   spectral_patch=g["spectral_patch"], mask_ratio=0.75, **DECODER)
                         if impl == "ours" else
                         ReferenceMAE(img_size=g["image"], patch_size=g["spatial_patch"], in_chans=g["bands"],
                                      **DECODER))
                opt = torch.optim.AdamW(model.parameters(), lr=1.5e-4, weight_decay=0.05)
                step = make_train_step(model, opt, dtype, m)
                name = f"{impl} {dtype} mask {m:g}"
                labels[(impl, dtype, m)] = name
                cases.append(Case(name, run=lambda _, step=step: step(x)))
    # diagnostic: our model with the reference's masked MSE in place of mae_spectral (fp32 and bf16, mask 0.75)
    for dtype in DTYPES:
        torch.manual_seed(0)
        model = build_mae("tiny", g["bands"], g["image"], spatial_patch=g["spatial_patch"],
                          spectral_patch=g["spectral_patch"], mask_ratio=0.75, **DECODER)
        model.loss_fn = MaskedMSELoss()
        opt = torch.optim.AdamW(model.parameters(), lr=1.5e-4, weight_decay=0.05)
        step = make_train_step(model, opt, dtype, 0.75)
        cases.append(Case(f"ours-with-MSE {dtype} mask 0.75", run=lambda _, step=step: step(x)))
    compile_seconds = None
    if args.compile:  # train.compile=true: our model through torch.compile (inductor), fp32, mask 0.75
        torch.manual_seed(0)
        model = build_mae("tiny", g["bands"], g["image"], spatial_patch=g["spatial_patch"],
                          spectral_patch=g["spectral_patch"], mask_ratio=0.75, **DECODER)
        opt = torch.optim.AdamW(model.parameters(), lr=1.5e-4, weight_decay=0.05)
        step = make_train_step(torch.compile(model), opt, "fp32", 0.75)
        started = time.perf_counter()
        step(x)  # compiles: outside the timed rounds
        compile_seconds = time.perf_counter() - started
        cases.append(Case("ours-compiled fp32 mask 0.75", run=lambda _, step=step: step(x)))
    mm32, mm32_flops = matmul_case("fp32", args.mm_reps)
    cases.append(mm32)
    if "bf16" in DTYPES:
        mm16, mm16_flops = matmul_case("bf16", 2 * args.mm_reps)
        cases.append(mm16)

    load_before = _load()
    started = time.perf_counter()
    gate = QuietGate(budget_s=args.quiet_budget) if args.quiet_budget > 0 else None
    times = time_rounds(gated(cases, gate), repeats=args.steps, warmup=2, budget_s=args.budget,
                        min_repeats=min(7, args.steps))
    seconds = time.perf_counter() - started
    load_after = _load()

    batch = g["batch"]
    ips = {key: batch / median(times[name]) for key, name in labels.items()}
    peak = {"fp32": mm32_flops / median(times["mm fp32"])}
    if "bf16" in DTYPES:
        peak["bf16"] = mm16_flops / median(times["mm bf16"])
    achieved = {key: flops[(key[0], key[2])] / median(times[name]) for key, name in labels.items()}

    rows = []
    for dtype in DTYPES:
        for m in MASKS:
            official = OFFICIAL.get((dtype, m))
            paired = paired_ratio(times, labels[("reference", dtype, m)], labels[("ours", dtype, m)])
            note = f"paired per-round ratio {paired:.3g}x"
            if official:
                note += f"; official code here (MACHINE.md): {official[0]} img/s"
            rows.append(row("1. MAE train step", f"ours {dtype}, mask {m:g}, images/s", ips[("ours", dtype, m)], "img/s",
                            baseline=ips[("reference", dtype, m)], baseline_label=f"reference MAE {dtype}",
                            min_ratio=1.0, note=note))
    if compile_seconds is not None:
        name = "ours-compiled fp32 mask 0.75"
        paired = paired_ratio(times, labels[("reference", "fp32", 0.75)], name)
        rows.append(row("1. MAE train step", "ours fp32 with train.compile=true (torch.compile, inductor), mask 0.75, images/s",
                        batch / median(times[name]), "img/s", baseline=ips[("reference", "fp32", 0.75)],
                        baseline_label="reference MAE fp32 (eager)",
                        note=f"paired per-round ratio {paired:.3g}x; the first step compiled for {compile_seconds:.0f} s; "
                             f"ours eager: {ips[('ours', 'fp32', 0.75)]:.3g} img/s"))
    speedup = {(impl, dtype): ips[(impl, dtype, 0.75)] / ips[(impl, dtype, 0.0)] for impl in models for dtype in DTYPES}
    for dtype in DTYPES:
        rows.append(row("1. MAE masking speedup", f"ours {dtype}: mask 0.75 vs 0.0 images/s",
                        speedup[("ours", dtype)], "x", baseline=speedup[("reference", dtype)],
                        baseline_label=f"reference {dtype} speedup",
                        min_ratio=1.0 if dtype == "fp32" else None,
                        note=f"official code: {OFFICIAL_MASKING_SPEEDUP}x (fp32)" if dtype == "fp32" else ""))
    for dtype in DTYPES:
        name = f"ours-with-MSE {dtype} mask 0.75"
        paired = paired_ratio(times, labels[("reference", dtype, 0.75)], name)
        rows.append(row("1. MAE diagnosis", f"ours with the reference's masked MSE as loss, {dtype}, mask 0.75, images/s",
                        batch / median(times[name]), "img/s", baseline=ips[("reference", dtype, 0.75)],
                        baseline_label=f"reference MAE {dtype}",
                        note=f"paired per-round ratio {paired:.3g}x; ours with mae_spectral: "
                             f"{ips[('ours', dtype, 0.75)]:.3g} img/s"))
    for impl in models if "bf16" in DTYPES else ():
        rows.append(row("1. MAE bf16 speedup", f"{impl}: bf16 vs fp32 images/s, mask 0.75", ips[(impl, "bf16", 0.75)],
                        "img/s", baseline=ips[(impl, "fp32", 0.75)], baseline_label=f"{impl} fp32"))
    for m in MASKS:
        rows.append(row("1. MAE FLOPs", f"ours, GFLOP per image fwd+bwd, mask {m:g}", flops[("ours", m)] / batch / 1e9,
                        "GFLOP", baseline=flops[("reference", m)] / batch / 1e9, baseline_label="reference",
                        note="MACHINE.md official: " + ("3.07" if m else "8.78")))
    for dtype in DTYPES:
        for m in MASKS:
            official = OFFICIAL.get((dtype, m))
            note = f"share of the fp32 mm peak measured in this run ({peak['fp32'] / 1e9:.0f} GFLOP/s)"
            if dtype == "bf16":
                note += f"; of the bf16 peak: {achieved[('ours', dtype, m)] / peak['bf16']:.0%}"
            if official and official[1] is not None:
                note += f"; official code here: {official[1]:.0%}"
            rows.append(row("1. MAE achieved FLOP/s", f"ours {dtype} mask {m:g}, share of fp32 peak",
                            achieved[("ours", dtype, m)] / peak["fp32"], "",
                            baseline=achieved[("reference", dtype, m)] / peak["fp32"], baseline_label="reference",
                            note=note))
    for dtype in DTYPES:
        rows.append(row("1. matmul peak", f"torch.mm {dtype} {MM_SIZE}^2, {torch.get_num_threads()} threads",
                        peak[dtype] / 1e9, "GFLOP/s", baseline=MACHINE_MM_PEAK[dtype] / 1e9,
                        baseline_label="MACHINE.md", note="this run's load vs the quiet machine"))

    loss_rows, loss_details = bench_loss_cost(ours, x, args)
    rows += loss_rows
    extra_ms = loss_details["ms"]["mae_spectral"] - loss_details["ms"]["masked MSE"]
    for dtype in DTYPES:
        step_ms = 1e3 * median(times[labels[("ours", dtype, 0.75)]])
        rows.append(row("1. MAE loss cost", f"mae_spectral minus masked MSE, share of our {dtype} mask 0.75 step",
                        extra_ms / step_ms, "", note=f"{extra_ms:.0f} ms of a {step_ms:.0f} ms step"))
    details = {
        "geometry": g, "decoder": DECODER, "threads": torch.get_num_threads(), "params": params,
        "quiet_gate": gate.summary() if gate else None, "rounds": len(times["mm fp32"]),
        "seconds": times, "spread": {k: spread(v) for k, v in times.items()}, "wall_seconds": seconds,
        "load_before": load_before, "load_after": load_after,
        "images_per_s": {f"{k[0]} {k[1]} mask {k[2]:g}": v for k, v in ips.items()},
        "flops_per_step": {f"{k[0]} mask {k[1]:g}": v for k, v in flops.items()},
        "achieved_flops": {f"{k[0]} {k[1]} mask {k[2]:g}": v for k, v in achieved.items()},
        "matmul_peak_flops": peak, "masking_speedup": {f"{k[0]} {k[1]}": v for k, v in speedup.items()},
        "official_machine_md": {f"{k[0]} mask {k[1]:g}": {"images_per_s": v[0], "share_of_fp32_peak": v[1]}
                                for k, v in OFFICIAL.items()},
        "loss_cost": loss_details,
        "min_based_ratio_ours_vs_reference": {
            f"{dtype} mask {m:g}": min_ratio_of(times, labels[("reference", dtype, m)], labels[("ours", dtype, m)])
            for dtype in DTYPES for m in MASKS},
        "min_based_ratio_ours_with_mse_vs_reference": {
            dtype: min_ratio_of(times, labels[("reference", dtype, 0.75)], f"ours-with-MSE {dtype} mask 0.75")
            for dtype in DTYPES},
    }
    return rows, details


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The reference's loss: per-patch mean squared error, averaged over masked patches."""
    loss = (pred - target) ** 2
    return (loss.mean(dim=-1) * mask).sum() / mask.sum().clamp_min(1.0)


def bench_loss_cost(model, x: torch.Tensor, args: argparse.Namespace) -> tuple[list[dict], dict]:
    """Forward + backward of the loss alone on one step's prediction: ``mae_spectral`` (all
    terms; and with sam/variance/range weights 0, which computes the same terms) vs masked MSE."""
    with torch.no_grad():
        out = model(x, mask_ratio=0.75)
    patches = model.patchify(x)
    pred0, mask = out["pred"].detach(), out["mask"]
    zero_model = build_mae("tiny", 3, 224, spatial_patch=16, spectral_patch=3, mask_ratio=0.75,
                           loss_weights={"sam": 0.0, "variance": 0.0, "range": 0.0}, **DECODER)

    def case(name, fn):
        def run(_):
            pred = pred0.clone().requires_grad_(True)
            fn(pred).backward()
        return Case(name, run=run)

    cases = [
        case("mae_spectral", lambda p: model.forward_loss(patches, p, mask)[0]),
        case("mae_spectral, weights mse only", lambda p: zero_model.forward_loss(patches, p, mask)[0]),
        case("masked MSE", lambda p: masked_mse(p, patches, mask)),
        case("clone only", lambda p: p.sum()),
    ]
    times = time_interleaved(cases, repeats=max(5, args.steps), warmup=1)
    ms = {k: 1e3 * median(v) for k, v in times.items()}
    rows = [
        row("1. MAE loss cost", "mae_spectral fwd+bwd on one step's prediction, ms", ms["mae_spectral"], "ms",
            baseline=ms["masked MSE"], baseline_label="reference masked MSE",
            note=f"(32, 196, 768) prediction, mask 0.75; each timing includes a clone of it ({ms['clone only']:.1f} ms)"),
        row("1. MAE loss cost", "mae_spectral with sam/variance/range weights 0, ms",
            ms["mae_spectral, weights mse only"], "ms", baseline=ms["masked MSE"], baseline_label="reference masked MSE",
            note="zero weights still compute every term"),
    ]
    return rows, {"ms": ms, "spread": {k: spread(v) for k, v in times.items()}}


# ---- 2. loader overhead ------------------------------------------------------------------------
LOADER_GEOMETRY = {"bands": 32, "image": 64, "spatial_patch": 8, "spectral_patch": 8, "mask_ratio": 0.75}


def build_loader_store(root: Path, num_samples: int, seed: int = 0) -> tuple[Path, pd.DataFrame, dict]:
    """A real store of ``num_samples`` radiance-like (32, 64, 64) tiles, its all-train sample
    index, and per-band mean/std (what ``band_stats`` would hold)."""
    from spectral_training.cubes.store import CubeStore, TileBatch

    g = LOADER_GEOMETRY
    rng = np.random.default_rng(seed)
    level = rng.uniform(500, 3000, size=(1, g["bands"], 1, 1)).astype(np.float32)
    tiles = rng.standard_normal((num_samples, g["bands"], g["image"], g["image"]), dtype=np.float32)
    tiles *= 0.1 * level
    tiles += level
    path = root / "loader_store.h5"
    store = CubeStore(path)
    store.create(num_bands=g["bands"], tile_size=g["image"], band_names=None, wavelengths_nm=None)
    ids = [f"bench@{i}" for i in range(num_samples)]
    store.append([TileBatch(cubes=tiles, sample_ids=ids, source_file="bench",
                            windows=np.zeros((num_samples, 4), dtype=np.int32),
                            labels=np.full(num_samples, -1, dtype=np.int64),
                            hashes=[f"{i:032x}" for i in range(num_samples)])])
    index = pd.DataFrame({"store_index": np.arange(num_samples, dtype=np.int64), "sample_id": ids,
                          "label": np.full(num_samples, -1, dtype=np.int64), "split": "train"})
    stats = {"mean": tiles.mean(axis=(0, 2, 3), dtype=np.float64).tolist(),
             "std": tiles.std(axis=(0, 2, 3), dtype=np.float64).tolist()}
    return path, index, stats


def _endless(loader):
    """Batches of ``loader`` epoch after epoch (the engine's sampler re-seeded per epoch)."""
    from spectral_training.training.data import engine_sampler

    epoch = 0
    while True:
        engine_sampler(loader).set_epoch(epoch)
        yield from loader
        epoch += 1


def bench_loader(args: argparse.Namespace) -> tuple[list[dict], dict]:
    from spectral_training.cubes.dataset import NormalisedTileDataset
    from spectral_training.cubes.transforms import build_transforms
    from spectral_training.training import make_loader

    g = LOADER_GEOMETRY
    with tempfile.TemporaryDirectory(prefix="bench_mae_") as tmp:
        path, index, stats = build_loader_store(Path(tmp), args.loader_samples)
        transform = build_transforms([], stats, where="bench_mae.transforms")
        dataset = NormalisedTileDataset(path, index, "train", transform)
        batch = args.loader_batch
        loaders = {w: make_loader(dataset, batch, shuffle=True, seed=0, num_workers=w) for w in (0, 1)}
        streams = {w: _endless(loader) for w, loader in loaders.items()}

        # the in-memory baseline: the same samples, normalised and stacked into batches once
        everything = torch.stack([dataset[i]["cube"] for i in range(len(dataset))])  # (N, C, H, W)
        batches = [b for b in everything.split(batch) if len(b) == batch]
        position = {"i": 0}

        def from_memory():
            b = batches[position["i"] % len(batches)]
            position["i"] += 1
            return b

        torch.manual_seed(0)
        model = build_mae("tiny", g["bands"], g["image"], spatial_patch=g["spatial_patch"],
                          spectral_patch=g["spectral_patch"], mask_ratio=g["mask_ratio"], **DECODER)
        opt = torch.optim.AdamW(model.parameters(), lr=1.5e-4, weight_decay=0.05)
        step = make_train_step(model, opt, args.loader_dtype, None)
        k = args.loader_steps

        def run_with(next_batch):
            def run(_):
                for _ in range(k):
                    step(next_batch())
            return run

        cases = [
            Case("in-memory tensors", run=run_with(from_memory)),
            Case("loader, 0 workers", run=run_with(lambda: next(streams[0])["cube"])),
            Case("loader, 1 worker", run=run_with(lambda: next(streams[1])["cube"])),
            # the loader alone, no training: with 0 workers a step waits exactly this long for its batch
            Case("loader alone, 0 workers", run=lambda _: [next(streams[0]) for _ in range(k)]),
        ]
        load_before = _load()
        gate = QuietGate(budget_s=args.quiet_budget) if args.quiet_budget > 0 else None
        times = time_rounds(gated(cases, gate), repeats=args.loader_rounds, warmup=1, budget_s=args.budget,
                            min_repeats=min(7, args.loader_rounds))
        load_after = _load()

        for loader in loaders.values():
            it = getattr(loader, "_iterator", None)
            if it is not None and hasattr(it, "_shutdown_workers"):
                it._shutdown_workers()
        dataset.close()

    fetch = [t / k for t in times.pop("loader alone, 0 workers")]  # seconds per batch
    sps = {name: k / median(t) for name, t in times.items()}
    base = sps["in-memory tensors"]
    rows = []
    for name in ("loader, 0 workers", "loader, 1 worker"):
        paired = paired_ratio(times, "in-memory tensors", name)
        rows.append(row("2. loader overhead", f"train steps/s fed by make_loader, {name.split(', ')[1]}", sps[name],
                        "steps/s", baseline=base, baseline_label="pre-stacked tensors in memory", min_ratio=0.95,
                        note=f"paired per-round ratio {paired:.3g}x"))
    step_s, fetch_s = 1.0 / base, median(fetch)
    rows.append(row("2. loader overhead", "one batch from the loader alone (0 workers), ms", 1e3 * fetch_s, "ms",
                    baseline=1e3 * step_s, baseline_label="one in-memory train step"))
    rows.append(row("2. loader overhead", "0 workers, expected from the parts: step / (step + batch fetch)",
                    step_s / (step_s + fetch_s), "", note="a serial loader adds its fetch time to every step; "
                    "less sensitive to load bursts than the steps/s ratio"))
    details = {"geometry": {**g, "batch": args.loader_batch, "decoder": DECODER, "dtype": args.loader_dtype, "samples": args.loader_samples,
                            "steps_per_timing": k},
               "seconds": times, "spread": {n: spread(t) for n, t in times.items()},
               "steps_per_s": sps, "quiet_gate": gate.summary() if gate else None,
               "rounds": len(times["in-memory tensors"]),
               "min_based_ratio_vs_memory": {n: min_ratio_of(times, "in-memory tensors", n)
                                             for n in ("loader, 0 workers", "loader, 1 worker")},
               "loader_alone_ms": [1e3 * f for f in fetch],
               "load_before": load_before, "load_after": load_after}
    return rows, details


# ---- 3. memory per variant ---------------------------------------------------------------------
def memory_step(variant: str, num_bands: int, image_size: int, spatial_patch: int, spectral_patch: int, batch: int,
                mask_ratio: float, threads: int, report_path: str) -> None:
    """Peak-RSS child target: build ``variant``, run one fp32 forward + backward + AdamW step.

    Writes ``{"build_s", "step_s", "params"}`` to ``report_path`` (the helper keeps only the RSS).
    """
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    torch.manual_seed(0)
    model = build_mae(variant, num_bands, image_size, spatial_patch=spatial_patch, spectral_patch=spectral_patch,
                      mask_ratio=mask_ratio)
    opt = torch.optim.AdamW(model.parameters(), lr=1.5e-4, weight_decay=0.05)
    x = torch.randn(batch, num_bands, image_size, image_size)
    t1 = time.perf_counter()
    make_train_step(model, opt, "fp32", None)(x)
    t2 = time.perf_counter()
    Path(report_path).write_text(json.dumps({"build_s": t1 - t0, "step_s": t2 - t1,
                                             "params": sum(p.numel() for p in model.parameters() if p.requires_grad)}))


def _mem_available_bytes() -> int:
    with open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def bench_memory(args: argparse.Namespace) -> tuple[list[dict], dict]:
    geometry = {"num_bands": args.mem_bands, "image_size": args.mem_image, "spatial_patch": args.mem_spatial_patch,
                "spectral_patch": args.mem_spectral_patch, "batch": args.mem_batch, "mask_ratio": 0.8}
    rows, details = [], {"geometry": {**geometry, "decoder": "model default 512 x 8 blocks, 16 heads", "dtype": "fp32"},
                         "variants": {}, "reference_setup_params": {}}
    variants = [v for v in MAE_VARIANTS if v in args.variants]
    for variant in variants:
        counts = mae_parameter_counts(variant, 30, 500, spatial_patch=25, spectral_patch=5)
        details["reference_setup_params"][variant] = counts
        rows.append(row("3. parameters", f"{variant}: trainable params at 30 bands, 500 px, 25x25x5", counts["total"] / 1e6,
                        "M", note=f"encoder {counts['encoder'] / 1e6:.1f} M (reference: "
                                  f"{MAE_VARIANTS[variant].reference_encoder_params}), decoder {counts['decoder'] / 1e6:.1f} M"))
    geo_text = (f"{geometry['num_bands']} bands, {geometry['image_size']} px, {geometry['spatial_patch']}x"
                f"{geometry['spatial_patch']}x{geometry['spectral_patch']}, batch {geometry['batch']}, mask 0.8")
    for variant in variants:
        counts = mae_parameter_counts(variant, geometry["num_bands"], geometry["image_size"],
                                      spatial_patch=geometry["spatial_patch"], spectral_patch=geometry["spectral_patch"])
        # weights, grads, two AdamW moments, one temporary: ~5 x 4 bytes per parameter
        estimate = 20 * counts["total"] + 300e6
        available = _mem_available_bytes()
        if estimate > 0.8 * available:
            note = f"skipped: needs ~{estimate / 1e9:.1f} GB, {available / 1e9:.1f} GB available"
            details["variants"][variant] = {"skipped": note}
            rows.append(row("3. peak memory", f"{variant}: build + one fwd+bwd+AdamW step ({geo_text})", float("nan"),
                            "MB", note=note))
            continue
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
            report_path = handle.name
        try:
            rss = peak_rss_increase("benchmarks.bench_mae:memory_step",
                                    {**geometry, "variant": variant, "threads": args.threads, "report_path": report_path},
                                    timeout=args.mem_timeout)
            child = json.loads(Path(report_path).read_text())
        except Exception as err:  # timeout or crash (e.g. killed for memory): report, go on
            note = f"skipped: {type(err).__name__}: {str(err).splitlines()[0][:160]}"
            details["variants"][variant] = {"skipped": note}
            rows.append(row("3. peak memory", f"{variant}: build + one fwd+bwd+AdamW step ({geo_text})", float("nan"),
                            "MB", note=note))
            continue
        finally:
            Path(report_path).unlink(missing_ok=True)
        weights_mb = 4 * child["params"] / 1e6
        details["variants"][variant] = {**rss, **child}
        slow = "; over 60 s" if child["step_s"] > 60 else ""
        rows.append(row("3. peak memory", f"{variant}: build + one fwd+bwd+AdamW step ({geo_text})", rss["increase_mb"],
                        "MB", baseline=weights_mb, baseline_label="fp32 weights alone",
                        note=f"{child['params'] / 1e6:.1f} M params; build {child['build_s']:.1f} s, "
                             f"step {child['step_s']:.1f} s{slow}"))
    return rows, details


# ---- main --------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_mae", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10,
                        help="timed steps (rounds) per train-step configuration, after 2 warm-up; at least 7 are kept (default 10)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2, as MACHINE.md measures)")
    parser.add_argument("--budget", type=float, default=300,
                        help="seconds after which sections 1 and 2 stop adding timed rounds (at least 7 are kept; default 300)")
    parser.add_argument("--quiet-budget", type=float, default=120,
                        help="seconds per section that timed runs may wait for other processes to go quiet (0: never wait; default 120)")
    parser.add_argument("--mm-reps", type=int, default=3, help=f"fp32 torch.mm of {MM_SIZE}^2 per peak timing (bf16: twice)")
    parser.add_argument("--loader-samples", type=int, default=384, help="samples in the loader benchmark's store (default 384)")
    parser.add_argument("--loader-steps", type=int, default=2, help="train steps per loader timing (default 2)")
    parser.add_argument("--loader-rounds", type=int, default=10, help="timed rounds of the loader benchmark; at least 7 are kept (default 10)")
    parser.add_argument("--loader-batch", type=int, default=16, help="batch of the loader benchmark (default 16, as mae.loader.batch_size)")
    parser.add_argument("--loader-dtype", choices=DTYPES, default="bf16", help="autocast of the loader benchmark's step")
    parser.add_argument("--mem-bands", type=int, default=30)
    parser.add_argument("--mem-image", type=int, default=100)
    parser.add_argument("--mem-spatial-patch", type=int, default=25)
    parser.add_argument("--mem-spectral-patch", type=int, default=5)
    parser.add_argument("--mem-batch", type=int, default=2)
    parser.add_argument("--mem-timeout", type=float, default=150, help="seconds per variant's memory child before it is skipped")
    parser.add_argument("--variants", nargs="*", default=list(MAE_VARIANTS), help="variants of the memory section")
    parser.add_argument("--sections", nargs="*", default=["train", "loader", "memory"], choices=["train", "loader", "memory"])
    parser.add_argument("--no-compile", dest="compile", action="store_false",
                        help="leave out the torch.compile case (its first step compiles for ~1.5 min)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 steps, 2 loader rounds, tiny+small memory")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.loader_rounds, args.loader_steps, args.variants = 2, 2, 1, ["tiny", "small"]
        args.compile = False
        args.quiet_budget = min(args.quiet_budget, 10)
    torch.set_num_threads(args.threads)

    started = time.perf_counter()
    precisions = _adapt_to_this_cpu(args)
    print(f"bench_mae: {precisions}", flush=True)
    machine = machine_info()  # torch, its threads and the CPU capability included
    machine["precisions"] = precisions
    machine["omp_wait_policy"] = os.environ.get("OMP_WAIT_POLICY")
    machine["sources_sha256"] = source_fingerprint()
    rows: list[dict] = []
    details: dict = {}
    sections = {"train": bench_train_step, "loader": bench_loader, "memory": bench_memory}
    for name in args.sections:
        t0 = time.perf_counter()
        section_rows, section_details = sections[name](args)
        section_details["section_seconds"] = round(time.perf_counter() - t0, 1)
        rows += section_rows
        details[name] = section_details
    machine["load_average_at_end"] = _load()
    return {
        "name": NAME,
        "machine": machine,
        "params": vars(args),
        "seconds": round(time.perf_counter() - started, 1),
        "rows": rows,
        "details": details,
    }


if __name__ == "__main__":
    raise SystemExit(run_module_cli(main))
