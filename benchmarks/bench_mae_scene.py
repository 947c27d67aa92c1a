"""The spectral MAE at the reference set-up for real scenes, and what its decoder costs.

The reference pretrains on 500 x 500 px scenes of 30 bands with 25 x 25 x 5 patches (2,400 tokens
per image) at mask 0.8: the encoder sees 480 tokens, the decoder all 2,400 at its own width
(default 512 x 8 blocks x 16 heads). On a CPU that makes the step decoder-bound. For each decoder
size (the default, and two smaller ones a user may choose with ``mae.model.decoder_embed_dim``,
``decoder_depth``, ``decoder_num_heads``) this times one train step (forward + backward + AdamW,
tiny encoder, batch 1) interleaved with ``torch.mm`` runs that measure the matmul peak in the same
rounds, and reports images/s, GFLOP per image split into encoder and decoder (``FlopCounterMode``,
counted once, untimed), the share of the matmul peak reached, and the decoder's parameters. fp32
always; bf16 autocast too where the CPU computes bf16 natively (``amp: auto`` picks it there).

    python -m benchmarks.bench_mae_scene              # ~3-6 min on 2 cores
    python -m benchmarks.bench_mae_scene --quick      # 2 rounds, a smoke run (mae_scene_quick.json)
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.bench_mae import _load, make_train_step, matmul_case, time_rounds
from benchmarks.common import Case, machine_info, median, row, run_module_cli
from spectral_training.models import build_mae
from spectral_training.training.amp import cpu_has_native_bf16

NAME = "mae_scene"
SCENE = {"bands": 30, "image": 500, "spatial_patch": 25, "spectral_patch": 5, "mask_ratio": 0.8, "variant": "tiny"}
DECODERS = {  # label -> (width, depth, heads)
    "512 x 8 (default)": (512, 8, 16),
    "256 x 4": (256, 4, 8),
    "128 x 2": (128, 2, 4),
}


def build_scene_mae(width: int, depth: int, heads: int) -> torch.nn.Module:
    s = SCENE
    return build_mae(s["variant"], s["bands"], s["image"], spatial_patch=s["spatial_patch"],
                     spectral_patch=s["spectral_patch"], mask_ratio=s["mask_ratio"], decoder_embed_dim=width,
                     decoder_depth=depth, decoder_num_heads=heads)


def flops_by_part(model: torch.nn.Module, x: torch.Tensor) -> dict[str, float]:
    """FLOPs of one fp32 forward + backward, split into encoder, decoder and the rest (loss, masking)."""
    model.zero_grad(set_to_none=True)
    with FlopCounterMode(display=False) as counter:
        model(x, mask_ratio=SCENE["mask_ratio"])["loss"].backward()
    model.zero_grad(set_to_none=True)
    counts = counter.get_flop_counts()
    root = type(model).__name__
    parts = {"encoder": 0.0, "decoder": 0.0}
    for name, child in model.named_children():
        keys = ([f"{root}.{name}.{i}" for i in range(len(child))] if isinstance(child, torch.nn.ModuleList)
                else [f"{root}.{name}"])
        part = "decoder" if name.startswith("decoder") else "encoder"
        parts[part] += sum(sum(counts.get(key, {}).values()) for key in keys)
    parts["rest"] = sum(counts["Global"].values()) - parts["encoder"] - parts["decoder"]
    return parts


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_mae_scene", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds after one warm-up (default 5)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--budget", type=float, default=300, help="seconds after which no round is added (>= 3 kept)")
    parser.add_argument("--quick", action="store_true", help="2 rounds; writes mae_scene_quick.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds = 2
    torch.set_num_threads(args.threads)
    native_bf16, why = cpu_has_native_bf16()
    dtypes = ("fp32", "bf16") if native_bf16 else ("fp32",)
    s = SCENE
    x = torch.randn(1, s["bands"], s["image"], s["image"], generator=torch.Generator().manual_seed(0))

    flops, decoder_params, cases = {}, {}, []
    for label, (width, depth, heads) in DECODERS.items():
        torch.manual_seed(0)
        model = build_scene_mae(width, depth, heads)
        flops[label] = flops_by_part(model, x)
        decoder_params[label] = model.parameter_counts()["decoder"]
        for dtype in dtypes:
            torch.manual_seed(0)
            model = build_scene_mae(width, depth, heads)
            optimizer = torch.optim.AdamW(model.parameters(), lr=1.5e-4, weight_decay=0.05)
            step = make_train_step(model, optimizer, dtype, s["mask_ratio"])
            cases.append(Case(f"{label} {dtype}", run=lambda _, step=step: step(x)))
    peaks = {dtype: matmul_case(dtype, 3 if dtype == "fp32" else 6) for dtype in dtypes}
    cases += [case for case, _ in peaks.values()]

    started, load_before = time.perf_counter(), _load()
    times = time_rounds(cases, repeats=args.rounds, warmup=1, budget_s=args.budget, min_repeats=min(3, args.rounds))
    seconds = time.perf_counter() - started
    peak = {dtype: work / median(times[f"mm {dtype}"]) for dtype, (_, work) in peaks.items()}

    rows = []
    default = next(iter(DECODERS))
    for dtype in dtypes:
        ips = {label: 1.0 / median(times[f"{label} {dtype}"]) for label in DECODERS}
        for label in DECODERS:
            total = sum(flops[label].values())
            share = total * ips[label] / peak[dtype]
            rows.append(row("MAE scene step", f"decoder {label}, {dtype}, images/s", ips[label], "img/s",
                            baseline=ips[default], baseline_label=f"decoder {default}",
                            note=f"{share:.0%} of the {dtype} matmul peak measured in the same rounds "
                                 f"({peak[dtype] / 1e9:.0f} GFLOP/s)"))
    for label in DECODERS:
        part = flops[label]
        total = sum(part.values())
        rows.append(row("MAE scene FLOPs", f"decoder {label}: GFLOP per image fwd+bwd", total / 1e9, "GFLOP",
                        baseline=sum(flops[default].values()) / 1e9, baseline_label=f"decoder {default}",
                        note=f"encoder {part['encoder'] / 1e9:.1f}, decoder {part['decoder'] / 1e9:.1f}, "
                             f"rest {part['rest'] / 1e9:.1f}; decoder share {part['decoder'] / total:.0%}"))
        rows.append(row("MAE scene parameters", f"decoder {label}: trainable decoder parameters", decoder_params[label] / 1e6,
                        "M", baseline=decoder_params[default] / 1e6, baseline_label=f"decoder {default}"))
    machine = {**machine_info(),
               "native_bf16": native_bf16, "cpu": why, "load_average_before": load_before,
               "load_average_at_end": _load()}
    return {"name": NAME + ("_quick" if args.quick else ""), "machine": machine, "params": {**vars(args), **SCENE},
            "seconds": round(seconds, 1), "rows": rows,
            "details": {"seconds": times, "flops": flops, "decoders": DECODERS}}


if __name__ == "__main__":
    raise SystemExit(run_module_cli(main))
